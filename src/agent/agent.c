/*
 * ironcage-agent: the one small native program of ironcage. It runs INSIDE the sandbox, already confined by
 * bubblewrap (namespaces, no capabilities, seccomp, read-only system), and does what Node cannot do for a
 * child: set per-command rlimits, observe the command's exact end and resource use, and report them on a
 * status pipe. It holds no privilege the command does not also have. Built with the system compiler at
 * setup (scripts/build-native.mjs); no third-party code.
 *
 *   ironcage-agent exec [--rlimit NAME=SOFT:HARD]... [--status-fd N] [--seccomp-fd N] [--relay PORT:PATH] -- ARGV...
 *   ironcage-agent probe        prints {"landlock_abi":N} (N < 0: Landlock unavailable) for `ironcage doctor`
 *   ironcage-agent serve --socket PATH --token-fd N [--orphan-timeout S] [--ready-fd N] [--relay PORT:PATH]
 *                               the warm-sandbox agent: PID 1 of the sandbox, serving the host over a Unix socket
 *                               (protocol: docs/agent-protocol.md; host side: src/agent/client.ts)
 *
 * --seccomp-fd: a classic-BPF program (as for bwrap --seccomp) stacked on top of the sandbox's filter in the
 * command's process only, for profiles stricter than what the agent itself needs (it must fork and wait).
 *
 * Status line written to --status-fd when the command ends (one JSON object, newline-terminated):
 *   {"v":1,"exit":CODE}  or  {"v":1,"signal":SIGNO}  or  {"v":1,"exec_errno":ERRNO}
 *   plus "utime_us", "stime_us", "maxrss_kb" of the command and every descendant it waited for.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define AGENT_PROTOCOL_VERSION 1
#define MAX_RLIMITS 16
#define MAX_BPF_INSNS 4096

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)

struct rlimit_request {
  int resource;
  struct rlimit value;
};

static const struct {
  const char *name;
  int resource;
} rlimit_names[] = {
    {"cpu", RLIMIT_CPU},       {"fsize", RLIMIT_FSIZE}, {"nofile", RLIMIT_NOFILE}, {"nproc", RLIMIT_NPROC},
    {"data", RLIMIT_DATA},     {"as", RLIMIT_AS},       {"core", RLIMIT_CORE},     {"stack", RLIMIT_STACK},
    {"memlock", RLIMIT_MEMLOCK}, {"msgqueue", RLIMIT_MSGQUEUE}, {"sigpending", RLIMIT_SIGPENDING},
};

static void usage_exit(const char *why) {
  fprintf(stderr, "ironcage-agent: %s\nusage: ironcage-agent exec [--rlimit NAME=SOFT:HARD]... [--status-fd N] [--seccomp-fd N] [--relay PORT:SOCKETPATH] -- ARGV...\n"
                  "       ironcage-agent probe\n", why);
  exit(125);
}

static int parse_limit(const char *text, rlim_t *out) {
  if (strcmp(text, "inf") == 0) {
    *out = RLIM_INFINITY;
    return 0;
  }
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0') return -1;
  *out = (rlim_t)v;
  return 0;
}

/*
 * Parse NAME=SOFT:HARD. Returns NULL on success, else why it is malformed; *bad_number tells a bad numeric value
 * apart (exec mode reports that one with the argument, as it always did). Shared by exec and serve modes.
 */
static const char *rlimit_parse(const char *arg, struct rlimit_request *req, int *bad_number) {
  *bad_number = 0;
  const char *eq = strchr(arg, '=');
  const char *colon = eq ? strchr(eq, ':') : NULL;
  if (!eq || !colon) return "--rlimit takes NAME=SOFT:HARD";
  size_t name_len = (size_t)(eq - arg);
  req->resource = -1;
  for (size_t i = 0; i < sizeof rlimit_names / sizeof rlimit_names[0]; i++) {
    if (strlen(rlimit_names[i].name) == name_len && strncmp(arg, rlimit_names[i].name, name_len) == 0) {
      req->resource = rlimit_names[i].resource;
    }
  }
  if (req->resource < 0) return "unknown rlimit name";
  char soft[32];
  size_t soft_len = (size_t)(colon - eq - 1);
  if (soft_len == 0 || soft_len >= sizeof soft) return "bad rlimit value";
  memcpy(soft, eq + 1, soft_len);
  soft[soft_len] = '\0';
  if (parse_limit(soft, &req->value.rlim_cur) != 0 || parse_limit(colon + 1, &req->value.rlim_max) != 0) {
    *bad_number = 1;
    return "bad rlimit value";
  }
  if (req->value.rlim_cur > req->value.rlim_max) return "rlimit soft value above hard value";
  return NULL;
}

static struct rlimit_request parse_rlimit(const char *arg) {
  struct rlimit_request req;
  int bad_number = 0;
  const char *why = rlimit_parse(arg, &req, &bad_number);
  if (why != NULL && bad_number) {
    fprintf(stderr, "ironcage-agent: bad rlimit value in '%s'\n", arg);
    exit(125);
  }
  if (why != NULL) usage_exit(why);
  return req;
}

static int probe(void) {
  long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
  printf("{\"v\":%d,\"landlock_abi\":%ld}\n", AGENT_PROTOCOL_VERSION, abi < 0 ? -(long)errno : abi);
  return 0;
}

/* Read a whole BPF program from fd (closing it); exits on malformed input. */
static struct sock_fprog read_filter(int fd) {
  static struct sock_filter insns[MAX_BPF_INSNS];
  size_t got = 0;
  for (;;) {
    ssize_t n = read(fd, (char *)insns + got, sizeof insns - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) usage_exit("cannot read --seccomp-fd");
    if (n == 0) break;
    got += (size_t)n;
    if (got == sizeof insns) usage_exit("--seccomp-fd program too long");
  }
  close(fd);
  if (got == 0 || got % sizeof insns[0] != 0) usage_exit("--seccomp-fd program is not whole BPF instructions");
  struct sock_fprog prog = {.len = (unsigned short)(got / sizeof insns[0]), .filter = insns};
  return prog;
}

/* True when the peer of a socket the host holds (and never writes to) has closed it. */
static int host_gone(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
  return poll(&p, 1, timeout_ms) > 0 && (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

/* Inside a sandbox our parent is bwrap's init, PID 1 of the sandbox's own PID namespace. Only there is
 * kill(-1) safe: it reaches every process of the sandbox and nothing else. Anywhere else (someone running the
 * agent by hand) it would hit every process of the user, so then only the command's process group is killed. */
static int in_sandbox_pid_namespace(void) {
  if (getppid() != 1) return 0;
  char comm[32] = {0};
  int fd = open("/proc/1/comm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, comm, sizeof comm - 1);
  close(fd);
  return n > 0 && strcmp(comm, "bwrap\n") == 0;
}

static void stop_everything(pid_t child) {
  if (in_sandbox_pid_namespace()) kill(-1, SIGKILL); /* bwrap's init then ends, and the namespace with it */
  else kill(-child, SIGKILL);
}

/* Child side of exec: apply limits and filter, then become the command. Errors go back on error_fd. */
static void exec_command(char **argv, const struct rlimit_request *limits, int n_limits,
                         const struct sock_fprog *filter, int error_fd) {
  for (int i = 0; i < n_limits; i++) {
    if (setrlimit(limits[i].resource, &limits[i].value) != 0) {
      int err = errno;
      (void)!write(error_fd, &err, sizeof err);
      _exit(125);
    }
  }
  setpgid(0, 0); /* its own process group, so the agent can stop it with its descendants */
  /* Restore an empty signal mask (the agent blocks SIGCHLD for its signalfd) so the command starts clean. */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  /* Last step before exec: from here on the stricter filter also binds the exec itself. */
  if (filter != NULL && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, filter, 0, 0) != 0) {
    int err = errno;
    (void)!write(error_fd, &err, sizeof err);
    _exit(125);
  }
  execvp(argv[0], argv);
  int err = errno;
  (void)!write(error_fd, &err, sizeof err);
  fprintf(stderr, "ironcage: cannot execute '%s': %s\n", argv[0], strerror(err));
  _exit(err == ENOENT ? 127 : 126);
}

/* --relay PORT:PATH: the sandbox's network namespace has only loopback, so the one way out is the host's egress
 * proxy on a Unix socket bound in. A child of the agent listens on 127.0.0.1:PORT and copies each TCP
 * connection byte for byte to a fresh connection to that socket. One epoll loop, non-blocking descriptors,
 * a fixed buffer per direction, half-close passed on. It is no part of the command: the agent waits only for
 * the command, and the relay ends with the sandbox (kill(-1), its init's exit, or the agent's death). */
#define RELAY_MAX_PAIRS 128
#define RELAY_BUF (64u << 10)

struct relay_pair {
  int fd[2];              /* 0: the client inside, 1: the proxy's socket */
  uint8_t *buf[2];        /* buf[d]: read from fd[d], not yet written to fd[1 - d] */
  size_t len[2], off[2];
  int eof[2], shut[2];    /* fd[d] gave EOF; fd[1 - d] was shut for writing after the rest was flushed */
};

static int relay_listen(const char *spec, char *path, size_t path_size) {
  char *end;
  long port = strtol(spec, &end, 10);
  if (end == spec || *end != ':' || port < 1 || port > 65535 || strlen(end + 1) == 0 ||
      strlen(end + 1) >= path_size)
    usage_exit("--relay takes PORT:SOCKETPATH");
  strcpy(path, end + 1);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 128) != 0) {
    perror("ironcage-agent: relay listen");
    exit(125);
  }
  return fd;
}

static void relay_close(int ep, struct relay_pair *p) {
  for (int d = 0; d < 2; d++) {
    epoll_ctl(ep, EPOLL_CTL_DEL, p->fd[d], NULL);
    close(p->fd[d]);
    free(p->buf[d]);
  }
  memset(p, 0, sizeof *p);
  p->fd[0] = p->fd[1] = -1;
}

/* Move what can move now in both directions; 0 when the pair is finished or broken. */
static int relay_pump(int ep, struct relay_pair *p) {
  for (int progress = 1; progress;) {
    progress = 0;
    for (int d = 0; d < 2; d++) {
      if (!p->eof[d] && p->len[d] < RELAY_BUF) {
        ssize_t n = recv(p->fd[d], p->buf[d] + p->len[d], RELAY_BUF - p->len[d], 0);
        if (n > 0) p->len[d] += (size_t)n, progress = 1;
        else if (n == 0) p->eof[d] = 1, progress = 1;
        else if (errno != EAGAIN && errno != EINTR) return 0;
      }
      if (p->off[d] < p->len[d]) {
        ssize_t n = send(p->fd[1 - d], p->buf[d] + p->off[d], p->len[d] - p->off[d], MSG_NOSIGNAL);
        if (n > 0) p->off[d] += (size_t)n, progress = 1;
        else if (n < 0 && errno != EAGAIN && errno != EINTR) return 0;
        if (p->off[d] == p->len[d]) p->off[d] = p->len[d] = 0;
      }
      if (p->eof[d] && p->len[d] == 0 && !p->shut[d]) {
        shutdown(p->fd[1 - d], SHUT_WR);
        p->shut[d] = 1;
      }
    }
  }
  if (p->shut[0] && p->shut[1]) return 0;
  for (int d = 0; d < 2; d++) {
    struct epoll_event ev = {.events = 0, .data.ptr = p};
    if (!p->eof[d] && p->len[d] < RELAY_BUF) ev.events |= EPOLLIN;
    if (p->len[1 - d] > p->off[1 - d]) ev.events |= EPOLLOUT;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, p->fd[d], &ev) != 0) return 0;
  }
  return 1;
}

static void relay_accept(int ep, int lfd, const char *path, struct relay_pair *pairs) {
  for (;;) {
    int client = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (client < 0) return;
    struct relay_pair *p = NULL;
    for (int i = 0; i < RELAY_MAX_PAIRS && p == NULL; i++)
      if (pairs[i].fd[0] < 0) p = &pairs[i];
    /* The proxy is local: a blocking connect returns at once, then the socket turns non-blocking. */
    int up = p == NULL ? -1 : socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    if (up < 0 || connect(up, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        fcntl(up, F_SETFL, O_NONBLOCK) != 0) {
      if (up >= 0) close(up);
      close(client); /* too many connections, or the proxy is gone: the client sees a reset */
      continue;
    }
    p->fd[0] = client;
    p->fd[1] = up;
    p->buf[0] = malloc(RELAY_BUF);
    p->buf[1] = malloc(RELAY_BUF);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = p};
    if (p->buf[0] == NULL || p->buf[1] == NULL || epoll_ctl(ep, EPOLL_CTL_ADD, client, &ev) != 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, up, &ev) != 0)
      relay_close(ep, p);
  }
}

static void relay_run(int lfd, const char *path, pid_t agent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (getppid() != agent) _exit(0); /* the agent is already gone */
  static struct relay_pair pairs[RELAY_MAX_PAIRS];
  for (int i = 0; i < RELAY_MAX_PAIRS; i++) pairs[i].fd[0] = pairs[i].fd[1] = -1;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) != 0) _exit(125);
  for (;;) {
    struct epoll_event evs[32];
    int n = epoll_wait(ep, evs, 32, -1);
    if (n < 0 && errno != EINTR) _exit(125);
    for (int i = 0; i < n; i++) {
      struct relay_pair *p = evs[i].data.ptr;
      if (p == NULL) relay_accept(ep, lfd, path, pairs);
      else if (p->fd[0] >= 0 && !relay_pump(ep, p)) relay_close(ep, p);
    }
  }
}

static int run_exec(int argc, char **argv) {
  struct rlimit_request limits[MAX_RLIMITS];
  int n_limits = 0;
  int status_fd = -1;
  struct sock_fprog filter;
  int have_filter = 0;
  int relay_fd = -1;
  char relay_path[sizeof ((struct sockaddr_un *)0)->sun_path];
  int i = 0;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    } else if (strcmp(argv[i], "--rlimit") == 0 && i + 1 < argc) {
      if (n_limits == MAX_RLIMITS) usage_exit("too many --rlimit options");
      limits[n_limits++] = parse_rlimit(argv[++i]);
    } else if (strcmp(argv[i], "--status-fd") == 0 && i + 1 < argc) {
      status_fd = atoi(argv[++i]);
      if (status_fd < 3 || fcntl(status_fd, F_GETFD) < 0) usage_exit("--status-fd is not an open descriptor");
    } else if (strcmp(argv[i], "--seccomp-fd") == 0 && i + 1 < argc) {
      int fd = atoi(argv[++i]);
      if (fd < 3 || fcntl(fd, F_GETFD) < 0) usage_exit("--seccomp-fd is not an open descriptor");
      filter = read_filter(fd);
      have_filter = 1;
    } else if (strcmp(argv[i], "--relay") == 0 && i + 1 < argc && relay_fd < 0) {
      relay_fd = relay_listen(argv[++i], relay_path, sizeof relay_path);
    } else {
      usage_exit("unknown option");
    }
  }
  if (i >= argc) usage_exit("missing command after --");
  char **command = argv + i;

  /* Same-uid processes in the sandbox must not read or write our memory through /proc/PID/mem. */
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  /* Orphans of the command are re-parented to us, so their CPU time is counted when we reap them. */
  prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  if (status_fd >= 0) fcntl(status_fd, F_SETFD, FD_CLOEXEC);

  /* The status pipe is also the lifeline: the host never writes to it, so readable means the host is gone.
   * The host can die while bwrap is still setting up, before bwrap's --die-with-parent is armed for the
   * sandbox; then nothing else would end this sandbox. Fail closed: do not start, or stop everything. */
  if (status_fd >= 0 && host_gone(status_fd, 0)) {
    fprintf(stderr, "ironcage-agent: the host went away before the command started\n");
    return 125;
  }
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sig_fd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sig_fd < 0) {
    perror("ironcage-agent: signalfd");
    return 125;
  }

  /* The relay listens before the command starts, so its first connect cannot race the relay's start. */
  if (relay_fd >= 0) {
    pid_t agent = getpid();
    pid_t relay = fork();
    if (relay < 0) {
      perror("ironcage-agent: fork");
      return 125;
    }
    if (relay == 0) {
      close(sig_fd);
      if (status_fd >= 0) close(status_fd);
      relay_run(relay_fd, relay_path, agent);
    }
    close(relay_fd);
  }

  int error_pipe[2];
  if (pipe2(error_pipe, O_CLOEXEC) != 0) {
    perror("ironcage-agent: pipe");
    return 125;
  }
  pid_t child = fork();
  if (child < 0) {
    perror("ironcage-agent: fork");
    return 125;
  }
  if (child == 0) {
    close(error_pipe[0]);
    exec_command(command, limits, n_limits, have_filter ? &filter : NULL, error_pipe[1]);
  }
  close(error_pipe[1]);
  int exec_errno = 0;
  ssize_t got = read(error_pipe[0], &exec_errno, sizeof exec_errno);
  close(error_pipe[0]);
  if (got != (ssize_t)sizeof exec_errno) exec_errno = 0;

  /* Forward termination requests to the command; the host's hard stop is SIGKILL of the whole namespace. */
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);

  int status = 0;
  for (int done = 0; !done;) {
    struct pollfd fds[2] = {{.fd = sig_fd, .events = POLLIN}, {.fd = status_fd, .events = POLLIN | POLLRDHUP}};
    if (poll(fds, status_fd >= 0 ? 2 : 1, -1) < 0 && errno != EINTR) {
      perror("ironcage-agent: poll");
      return 125;
    }
    if (status_fd >= 0 && host_gone(status_fd, 0)) {
      stop_everything(child);
      return 125;
    }
    struct signalfd_siginfo si;
    while (read(sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
    }
    for (;;) {
      int st;
      pid_t pid = waitpid(-1, &st, WNOHANG);
      if (pid <= 0) break;
      if (pid == child) {
        status = st;
        done = 1;
      }
    }
  }
  /* Children's totals include every descendant reaped so far (by the command or by us as subreaper). */
  struct rusage children;
  getrusage(RUSAGE_CHILDREN, &children);

  if (status_fd >= 0) {
    char line[256];
    long long utime = (long long)children.ru_utime.tv_sec * 1000000 + children.ru_utime.tv_usec;
    long long stime = (long long)children.ru_stime.tv_sec * 1000000 + children.ru_stime.tv_usec;
    int n;
    if (exec_errno != 0) {
      n = snprintf(line, sizeof line, "{\"v\":%d,\"exec_errno\":%d", AGENT_PROTOCOL_VERSION, exec_errno);
    } else if (WIFSIGNALED(status)) {
      n = snprintf(line, sizeof line, "{\"v\":%d,\"signal\":%d", AGENT_PROTOCOL_VERSION, WTERMSIG(status));
    } else {
      n = snprintf(line, sizeof line, "{\"v\":%d,\"exit\":%d", AGENT_PROTOCOL_VERSION, WEXITSTATUS(status));
    }
    n += snprintf(line + n, sizeof line - (size_t)n, ",\"utime_us\":%lld,\"stime_us\":%lld,\"maxrss_kb\":%ld}\n",
                  utime, stime, children.ru_maxrss);
    (void)!write(status_fd, line, (size_t)n);
    close(status_fd);
  }
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

/* ==========================================================================================================
 * serve mode: the warm-sandbox agent (docs/agent-protocol.md). It is PID 1 of the sandbox's PID namespace and
 * serves the host over a Unix socket with one single-threaded epoll loop: no threads, no locks, every
 * descriptor non-blocking, every length bounded before anything is allocated for it.
 * ========================================================================================================== */

#define PROTO_VERSION 3 /* 2: SPAWN carries Landlock rules; 3: SPAWN flag 4 (exec audit), EXEC_EVENT */
#define HDR_LEN 9                  /* u32 payload length, u8 type, u32 request id */
#define TOKEN_LEN 32
#define MAX_PAYLOAD (2u << 20)     /* largest frame either way: a whole 1 MiB replay fits with room to spare */
#define PREAUTH_MAX_PAYLOAD 64     /* before HELLO only a HELLO fits: strangers cannot make us allocate */
#define MAX_CONNS 8
#define HELLO_DEADLINE_MS 5000
#define STARTUP_GRACE_MS 10000     /* the host has at least this long to connect the first time */
#define MAX_PROCS 64
#define RING_MAX (1u << 20)        /* output kept per process and stream for replay */
#define STDIN_MAX (1u << 20)       /* stdin bytes queued for a process that is not reading */
#define OUT_SKIP_LIVE (4u << 20)   /* a host this far behind stops getting live output (it replays instead) */
#define OUT_PUMP_LOW (1u << 20)    /* file reads refill a connection below this */
#define OUT_DROP (64u << 20)       /* a host this far behind is gone for practical purposes */
#define FILE_CHUNK (256u << 10)
#define LIST_FRAME_SOFT (64u << 10)
#define MAX_LIST_ENTRIES 100000
#define MAX_DEPTH 64
#define MAX_WATCHES 8192
#define MAX_READS 8
#define MAX_STRINGS 4096
#define DRAIN_BUDGET (4u << 20)
#define PTY_EXIT_GRACE_MS 200      /* how long EXIT waits for a terminal's last output (see reap) */
#define MAX_AUDITS 64              /* audited process trees with a live seccomp listener */
#define AUDIT_MAX_ARGS 64          /* an EXEC_EVENT carries at most this many arguments, */
#define AUDIT_MAX_ARG 4096         /* each at most this long (path too), */
#define AUDIT_MAX_TOTAL 16384      /* and this many argument bytes in all */
#define AUDIT_FIRST_EXEC_MS 5000   /* how long a spawn waits for its child's first (audited) execve */
#define WATCH_MASK (IN_CREATE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF)

enum {
  T_HELLO = 0x01, T_SPAWN, T_STDIN, T_STDIN_CLOSE, T_SIGNAL, T_RESIZE, T_LIST_PROCS, T_REPLAY, T_SHUTDOWN,
  T_READ = 0x10, T_WRITE, T_LIST_DIR, T_STAT, T_MKDIR, T_RENAME, T_REMOVE, T_WATCH, T_UNWATCH,
  T_HELLO_OK = 0x40, T_OK, T_ERROR, T_SPAWNED, T_PROC_LIST, T_REPLAY_DATA, T_FILE_DATA, T_DIR_ENTRIES, T_WATCH_OK,
  T_OUTPUT = 0x50, T_EXIT, T_FS_EVENT, T_EXEC_EVENT,
};
enum { SPAWN_PTY = 1, SPAWN_STDIN = 2, SPAWN_AUDIT_EXEC = 4 };
enum { EXEC_UNREADABLE = 1, EXEC_TRUNCATED = 2 };
enum { WRITE_APPEND = 1, WRITE_TRUNCATE = 2, WRITE_MODE = 4 };
enum { K_LISTEN = 1, K_SIGNAL, K_CONN, K_OUT, K_IN, K_PTY, K_INOTIFY, K_AUDIT };
enum { ST_RUNNING = 0, ST_EXITED = 1, ST_SIGNALED = 2 };

/* A byte queue: valid bytes are p[off..len). Compacted only when consumed, so offsets taken while a frame is
 * being built stay valid. */
struct buf {
  uint8_t *p;
  size_t off, len, cap;
};

/* The last RING_MAX bytes of a stream. It grows (doubling) only until it first fills, so the byte at stream
 * offset o always sits at index o % cap. */
struct ring {
  uint8_t *p;
  size_t cap;
  uint64_t total;
};

struct proc {
  int used, running, pty;
  uint32_t id;
  pid_t pid;
  uint64_t seq;
  int out_fd[2]; /* stdout, stderr read ends; for a pty out_fd[0] is the master; -1 once at end of file */
  int in_fd;     /* stdin pipe write end, or the pty master; -1 when none or closed */
  int in_armed;  /* stdin pipe registered for EPOLLOUT */
  int in_close_after;
  struct buf in_pending;
  struct ring ring[2];
  int state, value;
  uint64_t cpu_us, maxrss_kb;
  int64_t exit_deadline; /* > 0 while EXIT waits for the terminal's last output */
  char tag[256];
  char argv_text[2048]; /* the first arguments, NUL-separated, for LIST */
  size_t argv_len;
  uint32_t argv_count;
};

struct pending_read {
  int fd;
  uint32_t id;
  uint64_t pos, remaining;
  int bounded;
};

struct conn {
  int fd, authed, out_armed;
  uint64_t gen;
  int64_t hello_deadline;
  struct buf in, out;
  struct pending_read reads[MAX_READS];
  int nreads;
};

/* The seccomp user-notification listener of one audited process tree (see "exec audit" below). It outlives the
 * tree's root process, and its proc slot, until every task under the filter is gone: closing it earlier would
 * make the remaining tasks' execve fail with ENOSYS. */
struct audit {
  int used, fd;
  uint32_t proc_id;
};

struct watch {
  int wd, conn, recursive;
  uint32_t watch_id;
  uint64_t conn_gen;
  char *path;
};

static struct {
  int ep, listen_fd, sig_fd, ino_fd;
  uint8_t token[TOKEN_LEN];
  const char *socket_path;
  int64_t orphan_ms, orphan_deadline;
  int authed_count;
  struct conn conns[MAX_CONNS];
  uint64_t conn_gen;
  struct proc procs[MAX_PROCS];
  struct audit audits[MAX_AUDITS];
  uint32_t next_proc_id, next_watch_id;
  uint64_t spawn_seq;
  struct watch *watches;
  size_t nwatches, watch_cap;
  struct buf scratch;
} S;

/* Fail closed: as PID 1, kill(-1) reaches every other process of the namespace, and our exit ends it. */
static void die_all(const char *why, int code) {
  if (why != NULL) fprintf(stderr, "ironcage-agent: %s; killing every process of the sandbox\n", why);
  kill(-1, SIGKILL);
  if (S.socket_path != NULL) unlink(S.socket_path);
  _exit(code);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- buffers and frame encoding (all integers little-endian, written byte by byte) ---- */

static void buf_reserve(struct buf *b, size_t extra) {
  if (b->len + extra <= b->cap) return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra) cap *= 2;
  uint8_t *p = realloc(b->p, cap);
  if (p == NULL) die_all("out of memory", 70);
  b->p = p;
  b->cap = cap;
}
static size_t buf_pending(const struct buf *b) { return b->len - b->off; }
static void buf_consume(struct buf *b, size_t n) {
  b->off += n;
  if (b->off == b->len) {
    b->off = b->len = 0;
  } else if (b->off > b->cap / 2) {
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
  }
}
static void buf_free(struct buf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}
static void put_bytes(struct buf *b, const void *data, size_t n) {
  buf_reserve(b, n);
  if (n > 0) memcpy(b->p + b->len, data, n);
  b->len += n;
}
static void put_u8(struct buf *b, uint8_t v) { put_bytes(b, &v, 1); }
static void put_u32(struct buf *b, uint32_t v) {
  uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  put_bytes(b, x, 4);
}
static void put_u64(struct buf *b, uint64_t v) {
  put_u32(b, (uint32_t)v);
  put_u32(b, (uint32_t)(v >> 32));
}
static void put_str(struct buf *b, const char *s) { put_bytes(b, s, strlen(s) + 1); }
static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void set_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}
/* Start a frame; returns where it starts so frame_end can fill in the payload length. */
static size_t frame_begin(struct buf *b, uint8_t type, uint32_t id) {
  size_t at = b->len;
  uint8_t h[HDR_LEN] = {0, 0, 0, 0, type};
  set_le32(h + 5, id);
  put_bytes(b, h, HDR_LEN);
  return at;
}
static void frame_end(struct buf *b, size_t at) { set_le32(b->p + at, (uint32_t)(b->len - at - HDR_LEN)); }

/* ---- payload decoding: any short read marks the reader bad, and a bad frame drops the connection ---- */

struct rd {
  const uint8_t *p, *end;
  int bad;
};
static int rd_need(struct rd *r, size_t n) {
  if (r->bad || (size_t)(r->end - r->p) < n) {
    r->bad = 1;
    return 0;
  }
  return 1;
}
static uint8_t get_u8(struct rd *r) { return rd_need(r, 1) ? *r->p++ : 0; }
static uint16_t get_u16(struct rd *r) {
  if (!rd_need(r, 2)) return 0;
  uint16_t v = (uint16_t)(r->p[0] | r->p[1] << 8);
  r->p += 2;
  return v;
}
static uint32_t get_u32(struct rd *r) {
  if (!rd_need(r, 4)) return 0;
  uint32_t v = le32(r->p);
  r->p += 4;
  return v;
}
static uint64_t get_u64(struct rd *r) {
  uint64_t lo = get_u32(r);
  return lo | (uint64_t)get_u32(r) << 32;
}
/* Strings are NUL-terminated inside the payload and used in place. */
static const char *get_str(struct rd *r) {
  if (r->bad) return "";
  const uint8_t *z = memchr(r->p, 0, (size_t)(r->end - r->p));
  if (z == NULL) {
    r->bad = 1;
    return "";
  }
  const char *s = (const char *)r->p;
  r->p = z + 1;
  return s;
}
static int rd_done(const struct rd *r) { return !r->bad && r->p == r->end; }

/* ---- epoll ---- */

static uint64_t ekey(int kind, int slot, int sub) { return (uint64_t)kind << 32 | (uint64_t)slot << 8 | (uint64_t)sub; }
static void ep_ctl(int op, int fd, uint32_t events, uint64_t key) {
  struct epoll_event ev = {.events = events, .data.u64 = key};
  if (epoll_ctl(S.ep, op, fd, &ev) != 0 && op != EPOLL_CTL_DEL) die_all("epoll_ctl failed", 70);
}

/* ---- replies ---- */

static void reply_ok(struct conn *c, uint32_t id) { frame_end(&c->out, frame_begin(&c->out, T_OK, id)); }

static void reply_error(struct conn *c, uint32_t id, const char *code, int err, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *name = err != 0 ? strerrorname_np(err) : NULL;
  size_t at = frame_begin(&c->out, T_ERROR, id);
  put_str(&c->out, code);
  put_str(&c->out, name != NULL ? name : "");
  put_str(&c->out, msg);
  frame_end(&c->out, at);
}

static void reply_file_error(struct conn *c, uint32_t id, const char *what, const char *path) {
  int err = errno;
  reply_error(c, id, "FILE_ERROR", err, "%s %s: %s", what, path, strerror(err));
}

/* Queue the frame in S.scratch to every authenticated host that is keeping up. */
static void broadcast_scratch(void) {
  for (int i = 0; i < MAX_CONNS; i++) {
    struct conn *c = &S.conns[i];
    if (c->fd >= 0 && c->authed && buf_pending(&c->out) <= OUT_SKIP_LIVE) put_bytes(&c->out, S.scratch.p, S.scratch.len);
  }
  S.scratch.len = 0;
}

/* ---- output rings ---- */

static void ring_append(struct ring *g, const uint8_t *d, size_t n) {
  if (n == 0) return;
  if (g->cap < RING_MAX && g->total + n > g->cap) {
    size_t cap = g->cap ? g->cap : 4096;
    while (cap < RING_MAX && cap < g->total + n) cap *= 2;
    uint8_t *p = realloc(g->p, cap);
    if (p == NULL) die_all("out of memory", 70);
    g->p = p;
    g->cap = cap;
  }
  if (n > g->cap) { /* only the tail fits */
    d += n - g->cap;
    g->total += n - g->cap;
    n = g->cap;
  }
  size_t at = (size_t)(g->total % g->cap);
  size_t first = n < g->cap - at ? n : g->cap - at;
  memcpy(g->p + at, d, first);
  memcpy(g->p, d + first, n - first);
  g->total += n;
}
static uint64_t ring_start(const struct ring *g) { return g->total > g->cap ? g->total - g->cap : 0; }
static void ring_copy(const struct ring *g, uint64_t from, size_t n, uint8_t *out) {
  if (n == 0) return;
  size_t at = (size_t)(from % g->cap);
  size_t first = n < g->cap - at ? n : g->cap - at;
  memcpy(out, g->p + at, first);
  memcpy(out + first, g->p, n - first);
}

/* ---- processes ---- */

static struct proc *proc_by_id(uint32_t id) {
  for (int i = 0; i < MAX_PROCS; i++)
    if (S.procs[i].used && S.procs[i].id == id) return &S.procs[i];
  return NULL;
}

static void proc_output(struct proc *p, int stream, const uint8_t *data, size_t n) {
  uint64_t offset = p->ring[stream].total;
  ring_append(&p->ring[stream], data, n);
  size_t at = frame_begin(&S.scratch, T_OUTPUT, 0);
  put_u32(&S.scratch, p->id);
  put_u8(&S.scratch, (uint8_t)(stream + 1));
  put_u64(&S.scratch, offset);
  put_bytes(&S.scratch, data, n);
  frame_end(&S.scratch, at);
  broadcast_scratch();
}

static void proc_send_exit(struct proc *p) {
  p->exit_deadline = 0;
  size_t at = frame_begin(&S.scratch, T_EXIT, 0);
  put_u32(&S.scratch, p->id);
  put_u8(&S.scratch, (uint8_t)p->state);
  put_u32(&S.scratch, (uint32_t)p->value);
  put_u64(&S.scratch, p->cpu_us);
  put_u64(&S.scratch, p->maxrss_kb);
  frame_end(&S.scratch, at);
  broadcast_scratch();
}

static void proc_close_stdin(struct proc *p) {
  if (!p->pty && p->in_fd >= 0) close(p->in_fd); /* closing also removes it from epoll */
  p->in_fd = -1;
  p->in_armed = 0;
  buf_free(&p->in_pending);
}

static void proc_close_out(struct proc *p, int stream) {
  if (p->out_fd[stream] < 0) return;
  if (p->pty) proc_close_stdin(p); /* the master is stdin too */
  close(p->out_fd[stream]);
  p->out_fd[stream] = -1;
  if (p->exit_deadline > 0) proc_send_exit(p); /* the terminal hung up: its output is complete */
}

/* Read once from a stream; returns bytes read, 0 when nothing is available now or the stream ended. */
static size_t proc_read(struct proc *p, int stream) {
  uint8_t tmp[65536];
  if (p->out_fd[stream] < 0) return 0;
  ssize_t n = read(p->out_fd[stream], tmp, sizeof tmp);
  if (n > 0) {
    proc_output(p, stream, tmp, (size_t)n);
    return (size_t)n;
  }
  /* 0 is end of file; a pty master reports EIO once every holder of the terminal is gone. */
  if (n == 0 || (errno != EAGAIN && errno != EINTR)) proc_close_out(p, stream);
  return 0;
}

static void proc_update_stdin_events(struct proc *p, int slot) {
  int want = buf_pending(&p->in_pending) > 0;
  if (p->pty) {
    if (p->out_fd[0] >= 0 && want != p->in_armed)
      ep_ctl(EPOLL_CTL_MOD, p->out_fd[0], EPOLLIN | (want ? EPOLLOUT : 0), ekey(K_PTY, slot, 0));
  } else if (p->in_fd >= 0 && want != p->in_armed) {
    ep_ctl(want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, p->in_fd, EPOLLOUT, ekey(K_IN, slot, 0));
  }
  p->in_armed = want && p->in_fd >= 0;
}

static void proc_flush_stdin(struct proc *p, int slot) {
  while (p->in_fd >= 0 && buf_pending(&p->in_pending) > 0) {
    ssize_t n = write(p->in_fd, p->in_pending.p + p->in_pending.off, buf_pending(&p->in_pending));
    if (n > 0) {
      buf_consume(&p->in_pending, (size_t)n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      break;
    } else { /* nobody reads it any more (EPIPE, or EIO on a hung-up pty): drop what is queued */
      p->in_pending.off = p->in_pending.len = 0;
      if (!p->pty) {
        if (p->in_armed) ep_ctl(EPOLL_CTL_DEL, p->in_fd, 0, 0);
        proc_close_stdin(p);
      }
    }
  }
  if (buf_pending(&p->in_pending) == 0 && p->in_close_after && !p->pty && p->in_fd >= 0) {
    if (p->in_armed) ep_ctl(EPOLL_CTL_DEL, p->in_fd, 0, 0);
    proc_close_stdin(p);
  }
  proc_update_stdin_events(p, slot);
}

static void proc_release(struct proc *p) {
  for (int s = 0; s < 2; s++) {
    proc_close_out(p, s);
    free(p->ring[s].p);
  }
  proc_close_stdin(p);
  memset(p, 0, sizeof *p);
}

/* A free slot, evicting the oldest finished process when the table is full; -1 when all are running. */
static int proc_slot(void) {
  int oldest = -1;
  for (int i = 0; i < MAX_PROCS; i++) {
    if (!S.procs[i].used) return i;
    if (!S.procs[i].running && (oldest < 0 || S.procs[i].seq < S.procs[oldest].seq)) oldest = i;
  }
  if (oldest >= 0) proc_release(&S.procs[oldest]);
  return oldest;
}

/* The host's variables override the agent's own environment (the policy's env, set by bwrap). */
static char **build_env(const char **overrides, uint32_t n) {
  size_t base = 0;
  while (environ[base] != NULL) base++;
  char **env = calloc(base + n + 1, sizeof *env);
  if (env == NULL) die_all("out of memory", 70);
  size_t k = 0;
  for (size_t i = 0; i < base + n; i++) {
    const char *v = i < base ? environ[i] : overrides[i - base];
    size_t name_len = (size_t)(strchr(v, '=') - v);
    int shadowed = 0;
    for (size_t j = (i < base ? 0 : i - base + 1); j < n && !shadowed; j++)
      shadowed = strncmp(overrides[j], v, name_len + 1) == 0;
    if (!shadowed) env[k++] = (char *)v;
  }
  return env;
}

enum {
  STAGE_PTY = 1, STAGE_PIPE, STAGE_FORK, STAGE_SETSID, STAGE_TTY, STAGE_STDIO, STAGE_CHDIR, STAGE_RLIMIT, STAGE_EXEC,
  STAGE_LANDLOCK, STAGE_AUDIT
};
static const char *const stage_names[] = {"", "open a terminal", "create pipes", "fork", "start a session",
                                          "set the controlling terminal", "set up stdio", "change directory",
                                          "set an rlimit", "execute", "apply the Landlock rules",
                                          "start the exec audit"};
struct child_report {
  int stage, err;
};

static void child_fail(int fd, int stage) {
  struct child_report rep = {stage, errno};
  (void)!write(fd, &rep, sizeof rep);
  _exit(127);
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* The program execve() should run: argv0 itself when it has a slash, else the first executable match in the
 * PATH of the command's own environment (as execvp would with that environment). Resolved before vfork,
 * because the child shares our memory and must not touch `environ`. Returns 0 or an errno. */
static int resolve_program(const char *argv0, char **envp, char *out, size_t size) {
  if (strchr(argv0, '/') != NULL) {
    if (strlen(argv0) >= size) return ENAMETOOLONG;
    strcpy(out, argv0);
    return 0;
  }
  const char *path = "/usr/local/bin:/usr/bin:/bin";
  for (char **e = envp; *e != NULL; e++)
    if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
  int err = ENOENT;
  for (const char *dir = path;; dir++) {
    const char *end = strchrnul(dir, ':');
    size_t len = (size_t)(end - dir);
    int n = snprintf(out, size, "%.*s%s%s", (int)len, dir, len ? "/" : "", argv0);
    if (n > 0 && (size_t)n < size) {
      if (access(out, X_OK) == 0) return 0;
      if (errno == EACCES) err = EACCES; /* found but not executable: report that, as execvp does */
    }
    if (*end == '\0') return err;
    dir = end;
  }
}

static int set_nonblock(int fd) { return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* Per-process Landlock: rules "ro:PATH" (read, list, execute) or "rw:PATH" (everything beneath PATH). A process
 * with rules may touch nothing else in the filesystem, on top of the sandbox's read-only mounts. Rights the
 * running kernel's Landlock ABI does not know are left out of the handled set (they stay governed by the
 * mounts alone). Returns a ruleset fd, -1 with errno set on failure, or -2 when there are no rules. */
#define LL_RO (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR)
#define LL_RW_V1                                                                                              \
  (LL_RO | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |    \
   LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |                 \
   LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |               \
   LANDLOCK_ACCESS_FS_MAKE_SYM)
#define LL_REFER (1ULL << 13)    /* ABI 2 */
#define LL_TRUNCATE (1ULL << 14) /* ABI 3 */

static int landlock_ruleset(const char *const *rules, uint32_t n) {
  if (n == 0) return -2;
  long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 1) {
    errno = EOPNOTSUPP;
    return -1;
  }
  uint64_t rw = LL_RW_V1 | (abi >= 2 ? LL_REFER : 0) | (abi >= 3 ? LL_TRUNCATE : 0);
  struct landlock_ruleset_attr attr = {.handled_access_fs = rw};
  int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
  if (ruleset < 0) return -1;
  for (uint32_t i = 0; i < n; i++) {
    const char *rule = rules[i];
    uint64_t access = strncmp(rule, "ro:", 3) == 0 ? LL_RO : strncmp(rule, "rw:", 3) == 0 ? rw : 0;
    int fd = access ? open(rule + 3, O_PATH | O_CLOEXEC) : -1;
    if (fd < 0) {
      int err = access ? errno : EINVAL;
      close(ruleset);
      errno = err;
      return -1;
    }
    struct stat st;
    /* Directory-only rights cannot be granted on a file: keep the ones that apply to files. */
    if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
      access &= LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                LL_TRUNCATE;
    struct landlock_path_beneath_attr beneath = {.allowed_access = access, .parent_fd = fd};
    int rc = (int)syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &beneath, 0);
    int err = errno;
    close(fd);
    if (rc != 0) {
      close(ruleset);
      errno = err;
      return -1;
    }
  }
  return ruleset;
}

/* ---- exec audit (SPAWN flag 4): every execve/execveat in an audited process tree is reported to the host ----
 *
 * The child installs, right before its own execve, a seccomp filter that turns execve and execveat into user
 * notifications, and hands the listener to us over a socketpair. Children inherit the filter, so the whole
 * tree is audited. We read what the call was given from /proc/PID/mem and always answer CONTINUE: this is an
 * audit trail, not a gate. The static layers (namespaces, the sandbox's seccomp filter, mounts, Landlock) stay
 * the security boundary. TOCTOU: the path and argv are read from the caller's memory, which another thread of
 * the caller can rewrite after we read it and before the kernel reads it again on CONTINUE, so a hostile
 * program can make a report differ from what really ran. */

#if defined(__x86_64__)
#define AUDIT_ARCH_NATIVE AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define AUDIT_ARCH_NATIVE AUDIT_ARCH_AARCH64
#endif

/* Kernel seccomp_notif structures may grow; the kernel copies its own size, so ours must be at least that. */
#define NOTIF_BUF 256
union notif_req {
  struct seccomp_notif n;
  uint8_t pad[NOTIF_BUF];
};
union notif_resp {
  struct seccomp_notif_resp r;
  uint8_t pad[NOTIF_BUF];
};

/* Child side, the last step before execve: returns the listener fd (close-on-exec), or -1 with errno. */
static int exec_listener_install(void) {
#ifdef AUDIT_ARCH_NATIVE
  struct sock_filter insns[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      /* Another arch: allow here; the sandbox's own filter already refuses foreign-arch syscalls. */
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_NATIVE, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_execve, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_execveat, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
  };
  struct sock_fprog prog = {.len = (unsigned short)(sizeof insns / sizeof insns[0]), .filter = insns};
  return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
#else
  errno = EOPNOTSUPP;
  return -1;
#endif
}

static int send_fd(int sock, int fd) {
  char byte = 0;
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } u;
  memset(&u, 0, sizeof u);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  return sendmsg(sock, &msg, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

/* Blocks until the child sends its listener or ends (then -1). */
static int recv_fd(int sock) {
  char byte;
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } u;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  struct cmsghdr *c = n == 1 ? CMSG_FIRSTHDR(&msg) : NULL;
  if (c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
    return -1;
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

/* Let the syscall run as if no filter had asked. ENOENT (the caller died meanwhile) needs nothing. */
static void notif_continue(int fd, uint64_t id) {
  union notif_resp resp;
  memset(&resp, 0, sizeof resp);
  resp.r.id = id;
  resp.r.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
  (void)ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp.r);
}

/* argv as NUL-separated strings in `args` (count `argc`). */
static void exec_event_send(uint32_t proc_id, uint32_t pid, uint8_t flags, const char *path, const char *args,
                            uint32_t argc) {
  size_t at = frame_begin(&S.scratch, T_EXEC_EVENT, 0);
  put_u32(&S.scratch, proc_id);
  put_u32(&S.scratch, pid);
  put_u8(&S.scratch, flags);
  put_str(&S.scratch, path);
  put_u32(&S.scratch, argc);
  for (uint32_t i = 0; i < argc; i++) {
    put_str(&S.scratch, args);
    args += strlen(args) + 1;
  }
  frame_end(&S.scratch, at);
  broadcast_scratch();
}

/* Read a NUL-terminated string of at most cap-1 bytes at addr. Page by page, so a string that ends just
 * before an unmapped page still reads. Returns its length, or -1 when unreadable; *truncated when cut. */
static ssize_t mem_read_str(int mem, uint64_t addr, char *out, size_t cap, int *truncated) {
  size_t got = 0;
  while (got + 1 < cap) {
    size_t page_left = 4096 - (size_t)((addr + got) % 4096);
    size_t want = cap - 1 - got < page_left ? cap - 1 - got : page_left;
    ssize_t n = pread(mem, out + got, want, (off_t)(addr + got));
    if (n <= 0) return -1;
    char *z = memchr(out + got, 0, (size_t)n);
    if (z != NULL) return z - out;
    got += (size_t)n;
  }
  out[cap - 1] = '\0';
  *truncated = 1;
  return (ssize_t)(cap - 1);
}

/* What an execve/execveat was asked to run, read from the caller's memory (the caller is of our uid and
 * dumpable, so /proc/PID/mem needs no ptrace; process_vm_readv is refused by the sandbox's profile).
 * Fills path and args (NUL-separated, *argc of them) as far as it can and returns EXEC_* flags. */
static uint8_t read_exec_args(const struct seccomp_notif *n, char *path, char *args, uint32_t *argc) {
  int truncated = 0;
  path[0] = '\0';
  *argc = 0;
  char name[32];
  snprintf(name, sizeof name, "/proc/%u/mem", n->pid);
  int mem = open(name, O_RDONLY | O_CLOEXEC);
  if (mem < 0) return EXEC_UNREADABLE;
  int at_variant = n->data.nr == __NR_execveat; /* execveat(dirfd, path, argv, envp, flags) */
  uint64_t path_addr = n->data.args[at_variant ? 1 : 0], argv_addr = n->data.args[at_variant ? 2 : 1];
  uint8_t flags = 0;
  if (mem_read_str(mem, path_addr, path, AUDIT_MAX_ARG, &truncated) < 0) {
    path[0] = '\0';
    flags |= EXEC_UNREADABLE;
  }
  size_t used = 0;
  for (uint32_t i = 0; argv_addr != 0; i++) {
    uint64_t ptr = 0;
    if (pread(mem, &ptr, sizeof ptr, (off_t)(argv_addr + 8ull * i)) != (ssize_t)sizeof ptr) {
      flags |= EXEC_UNREADABLE;
      break;
    }
    if (ptr == 0) break;
    size_t room = AUDIT_MAX_TOTAL - used < AUDIT_MAX_ARG ? AUDIT_MAX_TOTAL - used : AUDIT_MAX_ARG;
    if (i == AUDIT_MAX_ARGS || room < 2) {
      truncated = 1;
      break;
    }
    ssize_t len = mem_read_str(mem, ptr, args + used, room, &truncated);
    if (len < 0) {
      flags |= EXEC_UNREADABLE;
      break;
    }
    used += (size_t)len + 1;
    (*argc)++;
  }
  close(mem);
  return (uint8_t)(flags | (truncated ? EXEC_TRUNCATED : 0));
}

/* A notification is waiting (or the tree is gone) on audit slot a. */
static void on_audit(int a, uint32_t ev) {
  struct audit *au = &S.audits[a];
  if (!au->used) return;
  if (ev & EPOLLIN) {
    union notif_req req;
    memset(&req, 0, sizeof req); /* the kernel refuses a RECV buffer that is not zeroed */
    if (ioctl(au->fd, SECCOMP_IOCTL_NOTIF_RECV, &req.n) == 0) {
      static char path[AUDIT_MAX_ARG], args[AUDIT_MAX_TOTAL];
      uint32_t argc = 0;
      uint8_t flags = read_exec_args(&req.n, path, args, &argc);
      /* Still valid means the caller is still waiting in this very call, so the pid was not reused while we read
       * its memory. Not valid: it died or a signal interrupted the call (a restarted call notifies again), and
       * this exec never happened, so there is nothing to report. */
      uint64_t id = req.n.id;
      int valid = ioctl(au->fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
      notif_continue(au->fd, req.n.id);
      if (valid) exec_event_send(au->proc_id, req.n.pid, flags, path, args, argc);
    }
  }
  /* Hang-up: no task uses the filter any more (the tree's root included), so nothing can ever notify again. */
  if (ev & (EPOLLHUP | EPOLLERR)) {
    close(au->fd); /* also removes it from epoll */
    memset(au, 0, sizeof *au);
  }
}

static int audit_slot(void) {
  for (int i = 0; i < MAX_AUDITS; i++)
    if (!S.audits[i].used) return i;
  return -1;
}

/* Parent side of an audited spawn, before it reads the child's report pipe: receive the listener, then let the
 * child's first execve through (it waits for us; its path and argv are the ones we gave it, reported by
 * req_spawn after SPAWNED, because that child is still a copy of us and not dumpable). Returns the listener,
 * or -1 when the child ended first (its report says why) or with *rep filled in. */
static int audit_first_exec(pid_t pid, int sock, struct child_report *rep) {
  int fd = recv_fd(sock);
  if (fd < 0) return -1;
  struct pollfd pf = {.fd = fd, .events = POLLIN};
  int ready;
  do ready = poll(&pf, 1, AUDIT_FIRST_EXEC_MS);
  while (ready < 0 && errno == EINTR);
  if (ready > 0 && (pf.revents & POLLIN)) {
    union notif_req req;
    memset(&req, 0, sizeof req);
    if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &req.n) == 0) notif_continue(fd, req.n.id);
  } else if (ready == 0) {
    kill(pid, SIGKILL); /* it never reached execve: fail the spawn rather than block the agent */
    *rep = (struct child_report){STAGE_AUDIT, ETIMEDOUT};
  }
  return fd;
}

/* fork + exec with a report pipe, so a failed chdir/setrlimit/exec is an error reply rather than a process.
 * `program` (PATH_MAX bytes) receives the path given to execve; `*audit_fd` the exec audit listener, or -1. */
static int proc_start(struct proc *p, char **argv, char **envp, const char *cwd, const struct rlimit_request *lim,
                      uint32_t nlim, int ruleset, uint32_t flags, uint16_t rows, uint16_t cols,
                      struct child_report *rep, char *program, int *audit_fd) {
  int master = -1, slave = -1, out[2][2] = {{-1, -1}, {-1, -1}}, in[2] = {-1, -1}, report[2] = {-1, -1};
  int audit_sock[2] = {-1, -1};
  int audit = (flags & SPAWN_AUDIT_EXEC) != 0;
  *audit_fd = -1;
  rep->stage = 0;
  if (flags & SPAWN_PTY) {
    int unlock = 0;
    unsigned int ptn = 0;
    char name[64];
    struct winsize ws = {.ws_row = rows ? rows : 24, .ws_col = cols ? cols : 80};
    master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) != 0 || ioctl(master, TIOCGPTN, &ptn) != 0 ||
        ioctl(master, TIOCSWINSZ, &ws) != 0) {
      *rep = (struct child_report){STAGE_PTY, errno};
    } else {
      snprintf(name, sizeof name, "/dev/pts/%u", ptn);
      slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
      if (slave < 0) *rep = (struct child_report){STAGE_PTY, errno};
    }
  } else {
    if (pipe2(out[0], O_CLOEXEC) != 0 || pipe2(out[1], O_CLOEXEC) != 0 ||
        ((flags & SPAWN_STDIN) ? pipe2(in, O_CLOEXEC) : (in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC))) < 0 ||
        set_nonblock(out[0][0]) != 0 || set_nonblock(out[1][0]) != 0 || (in[1] >= 0 && set_nonblock(in[1]) != 0)) {
      *rep = (struct child_report){STAGE_PIPE, errno};
    }
  }
  if (rep->stage == 0 && pipe2(report, O_CLOEXEC) != 0) *rep = (struct child_report){STAGE_PIPE, errno};
  if (rep->stage == 0 && audit && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, audit_sock) != 0)
    *rep = (struct child_report){STAGE_AUDIT, errno};
  if (rep->stage == 0) {
    int err = resolve_program(argv[0], envp, program, PATH_MAX);
    if (err != 0) *rep = (struct child_report){STAGE_EXEC, err};
  }
  pid_t pid = -1;
  if (rep->stage == 0) {
    /* vfork: the child borrows our memory until it execs, which saves copying page tables on every spawn.
     * It only makes system calls and writes its own locals before execve or _exit. */
    /* An audited child's first execve waits for our answer, so we must keep running meanwhile: plain fork. */
    pid = audit ? fork() : vfork();
    if (pid < 0) *rep = (struct child_report){STAGE_FORK, errno};
  }
  if (pid == 0) {
    /* The command starts with a clean signal state: nothing blocked, SIGPIPE back to default. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    /* Its own session and process group, so SIGNAL reaches everything it starts (and a pty can be its tty). */
    if (setsid() < 0) child_fail(report[1], STAGE_SETSID);
    if (slave >= 0) {
      if (ioctl(slave, TIOCSCTTY, 0) != 0) child_fail(report[1], STAGE_TTY);
      if (dup2(slave, 0) < 0 || dup2(slave, 1) < 0 || dup2(slave, 2) < 0) child_fail(report[1], STAGE_STDIO);
    } else if (dup2(in[0], 0) < 0 || dup2(out[0][1], 1) < 0 || dup2(out[1][1], 2) < 0) {
      child_fail(report[1], STAGE_STDIO);
    }
    if (cwd[0] != '\0' && chdir(cwd) != 0) child_fail(report[1], STAGE_CHDIR);
    for (uint32_t i = 0; i < nlim; i++)
      if (setrlimit(lim[i].resource, &lim[i].value) != 0) child_fail(report[1], STAGE_RLIMIT);
    if (ruleset >= 0 && syscall(SYS_landlock_restrict_self, ruleset, 0) != 0) child_fail(report[1], STAGE_LANDLOCK);
    if (audit) { /* last, so the filter sees nothing of the set-up above: the first thing it reports is our execve */
      int listener = exec_listener_install();
      if (listener < 0 || send_fd(audit_sock[1], listener) != 0) child_fail(report[1], STAGE_AUDIT);
    }
    execve(program, argv, envp);
    child_fail(report[1], STAGE_EXEC);
  }
  close_fd(&slave);
  close_fd(&out[0][1]);
  close_fd(&out[1][1]);
  close_fd(&in[0]);
  close_fd(&report[1]);
  close_fd(&audit_sock[1]);
  if (pid > 0 && audit) *audit_fd = audit_first_exec(pid, audit_sock[0], rep);
  close_fd(&audit_sock[0]);
  if (pid > 0) {
    struct child_report got;
    ssize_t n;
    do n = read(report[0], &got, sizeof got);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof got) *rep = got; /* the child failed and exits; the reaper collects it */
  }
  close_fd(&report[0]);
  if (rep->stage != 0) {
    close_fd(audit_fd);
    close_fd(&master);
    close_fd(&out[0][0]);
    close_fd(&out[1][0]);
    close_fd(&in[1]);
    return -1;
  }
  p->pid = pid;
  p->pty = master >= 0;
  p->out_fd[0] = p->pty ? master : out[0][0];
  p->out_fd[1] = p->pty ? -1 : out[1][0];
  p->in_fd = p->pty ? master : in[1];
  return 0;
}

static int req_spawn(struct conn *c, uint32_t id, struct rd *r) {
  uint32_t flags = get_u32(r);
  uint16_t rows = get_u16(r), cols = get_u16(r);
  const char *cwd = get_str(r), *tag = get_str(r);
  /* argv, env, rlimits, landlock rules */
  const char *strings[4][MAX_STRINGS + 1];
  uint32_t counts[4];
  for (int list = 0; list < 4; list++) {
    counts[list] = get_u32(r);
    if (counts[list] > MAX_STRINGS) return 0;
    for (uint32_t i = 0; i < counts[list]; i++) strings[list][i] = get_str(r);
    strings[list][counts[list]] = NULL;
  }
  if (!rd_done(r) || (flags & ~(uint32_t)(SPAWN_PTY | SPAWN_STDIN | SPAWN_AUDIT_EXEC)) != 0) return 0;
  if (counts[0] == 0 || strings[0][0][0] == '\0') {
    reply_error(c, id, "BAD_REQUEST", EINVAL, "argv must not be empty");
    return 1;
  }
  for (uint32_t i = 0; i < counts[1]; i++) {
    const char *eq = strchr(strings[1][i], '=');
    if (eq == NULL || eq == strings[1][i]) {
      reply_error(c, id, "BAD_REQUEST", EINVAL, "environment entry %u is not NAME=VALUE", i);
      return 1;
    }
  }
  struct rlimit_request limits[MAX_RLIMITS];
  if (counts[2] > MAX_RLIMITS) {
    reply_error(c, id, "BAD_REQUEST", EINVAL, "at most %d rlimits", MAX_RLIMITS);
    return 1;
  }
  for (uint32_t i = 0; i < counts[2]; i++) {
    int bad_number;
    const char *why = rlimit_parse(strings[2][i], &limits[i], &bad_number);
    if (why != NULL) {
      reply_error(c, id, "BAD_REQUEST", EINVAL, "rlimit '%s': %s", strings[2][i], why);
      return 1;
    }
  }
  int audit = -1; /* checked before proc_slot, which may forget a finished process */
  if ((flags & SPAWN_AUDIT_EXEC) && (audit = audit_slot()) < 0) {
    reply_error(c, id, "LIMIT", EAGAIN, "%d audited process trees are alive, the most one agent tracks", MAX_AUDITS);
    return 1;
  }
  int slot = proc_slot();
  if (slot < 0) {
    reply_error(c, id, "LIMIT", EAGAIN, "%d processes are running, the most one sandbox agent tracks", MAX_PROCS);
    return 1;
  }
  int ruleset = landlock_ruleset(strings[3], counts[3]);
  if (ruleset == -1) {
    reply_error(c, id, "SPAWN_FAILED", errno, "cannot build the Landlock rules: %s", strerror(errno));
    return 1;
  }
  struct proc *p = &S.procs[slot];
  char **envp = build_env(strings[1], counts[1]);
  struct child_report rep;
  static char program[PATH_MAX];
  int audit_fd = -1;
  int rc = proc_start(p, (char **)strings[0], envp, cwd, limits, counts[2], ruleset, flags, rows, cols, &rep, program,
                      &audit_fd);
  free(envp);
  if (ruleset >= 0) close(ruleset);
  if (rc != 0) {
    memset(p, 0, sizeof *p);
    const char *subject = rep.stage == STAGE_CHDIR ? cwd : strings[0][0];
    reply_error(c, id, "SPAWN_FAILED", rep.err, "cannot %s (%s): %s", stage_names[rep.stage], subject,
                strerror(rep.err));
    return 1;
  }
  p->used = p->running = 1;
  p->id = ++S.next_proc_id;
  p->seq = ++S.spawn_seq;
  snprintf(p->tag, sizeof p->tag, "%s", tag);
  for (uint32_t i = 0; i < counts[0]; i++) {
    size_t n = strlen(strings[0][i]) + 1;
    if (p->argv_len + n > sizeof p->argv_text) break;
    memcpy(p->argv_text + p->argv_len, strings[0][i], n);
    p->argv_len += n;
    p->argv_count++;
  }
  if (p->pty) {
    ep_ctl(EPOLL_CTL_ADD, p->out_fd[0], EPOLLIN, ekey(K_PTY, slot, 0));
  } else {
    ep_ctl(EPOLL_CTL_ADD, p->out_fd[0], EPOLLIN, ekey(K_OUT, slot, 0));
    ep_ctl(EPOLL_CTL_ADD, p->out_fd[1], EPOLLIN, ekey(K_OUT, slot, 1));
  }
  size_t at = frame_begin(&c->out, T_SPAWNED, id);
  put_u32(&c->out, p->id);
  put_u32(&c->out, (uint32_t)p->pid);
  frame_end(&c->out, at);
  if (audit_fd >= 0) {
    S.audits[audit] = (struct audit){.used = 1, .fd = audit_fd, .proc_id = p->id};
    ep_ctl(EPOLL_CTL_ADD, audit_fd, EPOLLIN, ekey(K_AUDIT, audit, 0));
    /* The root's own exec, already let through by audit_first_exec; reported after SPAWNED so the host knows
     * the id. Later execs of the tree queue in the kernel until the loop reads them, so they come after. */
    static char args[AUDIT_MAX_TOTAL];
    size_t used = 0;
    uint32_t argc = 0;
    uint8_t eflags = 0;
    for (uint32_t i = 0; i < counts[0]; i++) { /* the same bounds as read_exec_args */
      size_t room = sizeof args - used < AUDIT_MAX_ARG ? sizeof args - used : AUDIT_MAX_ARG;
      if (i == AUDIT_MAX_ARGS || room < 2) {
        eflags |= EXEC_TRUNCATED;
        break;
      }
      size_t n = strlen(strings[0][i]);
      if (n > room - 1) {
        n = room - 1;
        eflags |= EXEC_TRUNCATED;
      }
      memcpy(args + used, strings[0][i], n);
      args[used + n] = '\0';
      used += n + 1;
      argc++;
    }
    exec_event_send(p->id, (uint32_t)p->pid, eflags, program, args, argc);
  }
  return 1;
}

/* Collect every exited child. Output already in the pipes is read first, so EXIT follows the last bytes the
 * process itself wrote; later output from its leftover children still arrives under its id. */
static void reap(void) {
  for (;;) {
    int status = 0;
    struct rusage ru;
    pid_t pid = wait4(-1, &status, WNOHANG, &ru);
    if (pid <= 0) return;
    int slot = -1;
    for (int i = 0; i < MAX_PROCS; i++)
      if (S.procs[i].used && S.procs[i].running && S.procs[i].pid == pid) slot = i;
    if (slot < 0) continue; /* an orphan re-parented to PID 1, or a child whose exec failed */
    struct proc *p = &S.procs[slot];
    for (int s = 0; s < 2; s++) {
      size_t budget = DRAIN_BUDGET, got;
      while (budget > 0 && (got = proc_read(p, s)) > 0) budget = got > budget ? 0 : budget - got;
    }
    p->running = 0;
    p->state = WIFSIGNALED(status) ? ST_SIGNALED : ST_EXITED;
    p->value = WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status);
    p->cpu_us = (uint64_t)ru.ru_utime.tv_sec * 1000000 + (uint64_t)ru.ru_utime.tv_usec +
                (uint64_t)ru.ru_stime.tv_sec * 1000000 + (uint64_t)ru.ru_stime.tv_usec;
    p->maxrss_kb = (uint64_t)ru.ru_maxrss;
    /* A terminal hands the process's last writes to the master asynchronously, so they may not be readable
     * yet: EXIT waits until the master hangs up, or briefly when leftover children keep the terminal open. */
    if (p->pty && p->out_fd[0] >= 0) p->exit_deadline = now_ms() + PTY_EXIT_GRACE_MS;
    else proc_send_exit(p);
  }
}

static struct proc *need_proc(struct conn *c, uint32_t id, uint32_t proc_id, int *slot) {
  struct proc *p = proc_by_id(proc_id);
  if (p == NULL) reply_error(c, id, "NO_SUCH_PROCESS", ESRCH, "no process with id %u", proc_id);
  else if (slot != NULL) *slot = (int)(p - S.procs);
  return p;
}

static int req_stdin(struct conn *c, uint32_t id, struct rd *r, int close_it) {
  uint32_t proc_id = get_u32(r);
  if (r->bad || (close_it && !rd_done(r))) return 0;
  int slot;
  struct proc *p = need_proc(c, id, proc_id, &slot);
  if (p == NULL) return 1;
  size_t n = (size_t)(r->end - r->p);
  if (p->in_fd < 0) {
    reply_error(c, id, "STDIN_CLOSED", EPIPE, "stdin of process %u is closed or was never opened", proc_id);
    return 1;
  }
  if (close_it) {
    /* On a terminal, end of input is the EOF character (^D), as when a user types it. */
    if (p->pty) put_u8(&p->in_pending, 4);
    else p->in_close_after = 1;
  } else {
    if (buf_pending(&p->in_pending) + n > STDIN_MAX) {
      reply_error(c, id, "BUSY", EAGAIN, "process %u is not reading its stdin (%u bytes queued)", proc_id,
                  (unsigned)buf_pending(&p->in_pending));
      return 1;
    }
    put_bytes(&p->in_pending, r->p, n);
  }
  proc_flush_stdin(p, slot);
  reply_ok(c, id);
  return 1;
}

static int req_signal(struct conn *c, uint32_t id, struct rd *r) {
  uint32_t proc_id = get_u32(r), signo = get_u32(r);
  if (!rd_done(r)) return 0;
  struct proc *p = need_proc(c, id, proc_id, NULL);
  if (p == NULL) return 1;
  if (signo < 1 || signo > 64) {
    reply_error(c, id, "BAD_REQUEST", EINVAL, "signal %u is out of range", signo);
    return 1;
  }
  /* A finished process's group may live on (its background children); but never signal a group whose id now
   * belongs to a newer process of ours. */
  int reused = 0;
  for (int i = 0; i < MAX_PROCS; i++) reused |= !p->running && S.procs[i].used && S.procs[i].running && S.procs[i].pid == p->pid;
  if (reused || kill(-p->pid, (int)signo) != 0) {
    reply_error(c, id, "NO_SUCH_PROCESS", reused ? ESRCH : errno, "process group of %u is gone", proc_id);
    return 1;
  }
  reply_ok(c, id);
  return 1;
}

static int req_resize(struct conn *c, uint32_t id, struct rd *r) {
  uint32_t proc_id = get_u32(r);
  uint16_t rows = get_u16(r), cols = get_u16(r);
  if (!rd_done(r)) return 0;
  struct proc *p = need_proc(c, id, proc_id, NULL);
  if (p == NULL) return 1;
  struct winsize ws = {.ws_row = rows, .ws_col = cols};
  if (!p->pty || p->out_fd[0] < 0) {
    reply_error(c, id, "BAD_REQUEST", ENOTTY, "process %u has no terminal", proc_id);
  } else if (ioctl(p->out_fd[0], TIOCSWINSZ, &ws) != 0) {
    reply_error(c, id, "BAD_REQUEST", errno, "cannot resize the terminal of process %u", proc_id);
  } else {
    reply_ok(c, id);
  }
  return 1;
}

static int req_list_procs(struct conn *c, uint32_t id, struct rd *r) {
  if (!rd_done(r)) return 0;
  size_t at = frame_begin(&c->out, T_PROC_LIST, id);
  uint32_t count = 0;
  for (int i = 0; i < MAX_PROCS; i++) count += (uint32_t)S.procs[i].used;
  put_u32(&c->out, count);
  for (int i = 0; i < MAX_PROCS; i++) {
    struct proc *p = &S.procs[i];
    if (!p->used) continue;
    put_u32(&c->out, p->id);
    put_u32(&c->out, (uint32_t)p->pid);
    put_u8(&c->out, (uint8_t)p->state);
    put_u32(&c->out, (uint32_t)p->value);
    put_u64(&c->out, p->cpu_us);
    put_u64(&c->out, p->maxrss_kb);
    put_u64(&c->out, p->ring[0].total);
    put_u64(&c->out, p->ring[1].total);
    put_str(&c->out, p->tag);
    put_u32(&c->out, p->argv_count);
    put_bytes(&c->out, p->argv_text, p->argv_len);
  }
  frame_end(&c->out, at);
  return 1;
}

static int req_replay(struct conn *c, uint32_t id, struct rd *r) {
  uint32_t proc_id = get_u32(r);
  uint8_t stream = get_u8(r);
  uint64_t from = get_u64(r);
  if (!rd_done(r) || stream < 1 || stream > 2) return 0;
  struct proc *p = need_proc(c, id, proc_id, NULL);
  if (p == NULL) return 1;
  const struct ring *g = &p->ring[stream - 1];
  uint64_t start = ring_start(g);
  if (from > g->total) from = g->total;
  uint64_t lost = from < start ? start - from : 0;
  uint64_t begin = from < start ? start : from;
  size_t n = (size_t)(g->total - begin);
  size_t at = frame_begin(&c->out, T_REPLAY_DATA, id);
  put_u64(&c->out, begin);
  put_u64(&c->out, lost);
  buf_reserve(&c->out, n);
  ring_copy(g, begin, n, c->out.p + c->out.len);
  c->out.len += n;
  frame_end(&c->out, at);
  return 1;
}

/* ---- files: plain syscalls in the agent's own view, so paths, `..` and symlinks resolve inside the sandbox
 * with the sandbox user's rights; nothing here can reach what the sandbox cannot ---- */

static uint8_t entry_type(mode_t m) { return S_ISREG(m) ? 0 : S_ISDIR(m) ? 1 : S_ISLNK(m) ? 2 : 3; }

struct lister {
  struct conn *c;
  uint32_t id, count;
  size_t frame_at, count_at, total;
  int too_many;
};

static void lister_flush(struct lister *l) {
  if (l->count == 0) return;
  set_le32(l->c->out.p + l->count_at, l->count);
  frame_end(&l->c->out, l->frame_at);
  l->count = 0;
}

static void lister_entry(struct lister *l, const char *path, const struct stat *st) {
  struct buf *b = &l->c->out;
  if (l->count == 0) {
    l->frame_at = frame_begin(b, T_DIR_ENTRIES, l->id);
    l->count_at = b->len;
    put_u32(b, 0);
  }
  put_u8(b, entry_type(st->st_mode));
  put_u32(b, (uint32_t)(st->st_mode & 07777));
  put_u64(b, (uint64_t)st->st_size);
  put_u64(b, (uint64_t)((int64_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000));
  put_str(b, path);
  l->count++;
  l->total++;
  if (b->len - l->frame_at > LIST_FRAME_SOFT) lister_flush(l);
}

/* Lists dirfd (and takes ownership of it). Subdirectories are opened relative to their parent with
 * O_NOFOLLOW, so a symlink swapped in mid-walk is never followed. */
static void list_walk(struct lister *l, int dirfd, char *path, size_t plen, uint32_t depth_left) {
  DIR *d = fdopendir(dirfd);
  if (d == NULL) {
    close(dirfd);
    return;
  }
  size_t sep = plen > 0 && path[plen - 1] == '/' ? 0 : 1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL && !l->too_many) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (l->total >= MAX_LIST_ENTRIES) {
      l->too_many = 1;
      break;
    }
    size_t nlen = strlen(e->d_name);
    if (plen + sep + nlen + 1 > PATH_MAX) continue;
    path[plen] = '/';
    memcpy(path + plen + sep, e->d_name, nlen + 1);
    struct stat st;
    if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      lister_entry(l, path, &st);
      if (S_ISDIR(st.st_mode) && depth_left > 1) {
        int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (sub >= 0) list_walk(l, sub, path, plen + sep + nlen, depth_left - 1);
      }
    }
    path[plen] = '\0';
  }
  closedir(d);
}

static int req_list_dir(struct conn *c, uint32_t id, struct rd *r) {
  uint32_t depth = get_u32(r);
  const char *path = get_str(r);
  if (!rd_done(r)) return 0;
  if (depth < 1) depth = 1;
  if (depth > MAX_DEPTH) depth = MAX_DEPTH;
  static char walk_path[PATH_MAX];
  size_t plen = strlen(path);
  if (plen >= PATH_MAX) {
    errno = ENAMETOOLONG;
    reply_file_error(c, id, "cannot list", "(path)");
    return 1;
  }
  memcpy(walk_path, path, plen + 1);
  while (plen > 1 && walk_path[plen - 1] == '/') walk_path[--plen] = '\0'; /* "dir/" lists as "dir" */
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    reply_file_error(c, id, "cannot list", path);
    return 1;
  }
  struct lister l = {.c = c, .id = id};
  list_walk(&l, fd, walk_path, plen, depth);
  lister_flush(&l);
  if (l.too_many) reply_error(c, id, "FILE_ERROR", E2BIG, "more than %d entries under %s; list less deeply", MAX_LIST_ENTRIES, path);
  else reply_ok(c, id);
  return 1;
}

static int req_stat(struct conn *c, uint32_t id, struct rd *r) {
  const char *path = get_str(r);
  if (!rd_done(r)) return 0;
  struct stat st;
  if (fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    reply_file_error(c, id, "cannot stat", path);
    return 1;
  }
  struct lister l = {.c = c, .id = id};
  lister_entry(&l, path, &st);
  lister_flush(&l);
  return 1;
}

static int req_read(struct conn *c, uint32_t id, struct rd *r) {
  uint64_t offset = get_u64(r), length = get_u64(r);
  const char *path = get_str(r);
  if (!rd_done(r)) return 0;
  if (c->nreads == MAX_READS) {
    reply_error(c, id, "BUSY", EAGAIN, "%d file reads are already in progress on this connection", MAX_READS);
    return 1;
  }
  /* O_NONBLOCK: opening a FIFO must not stall the agent; only regular files are read. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    reply_file_error(c, id, "cannot read", path);
    if (fd >= 0) close(fd);
    return 1;
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    reply_file_error(c, id, "cannot read (not a regular file)", path);
    return 1;
  }
  c->reads[c->nreads++] = (struct pending_read){.fd = fd, .id = id, .pos = offset, .remaining = length, .bounded = length > 0};
  return 1;
}

/* Stream pending file reads while the host keeps up. */
static void pump_reads(struct conn *c) {
  while (c->nreads > 0 && buf_pending(&c->out) < OUT_PUMP_LOW) {
    struct pending_read *pr = &c->reads[0];
    size_t want = pr->bounded && pr->remaining < FILE_CHUNK ? (size_t)pr->remaining : FILE_CHUNK;
    ssize_t n = 0;
    if (want > 0) {
      size_t at = frame_begin(&c->out, T_FILE_DATA, pr->id);
      buf_reserve(&c->out, want);
      n = pread(pr->fd, c->out.p + c->out.len, want, (off_t)pr->pos);
      if (n > 0) {
        c->out.len += (size_t)n;
        frame_end(&c->out, at);
        pr->pos += (uint64_t)n;
        if (pr->bounded) pr->remaining -= (uint64_t)n;
        continue;
      }
      c->out.len = at; /* nothing read: take the empty frame back */
      if (n < 0 && errno == EINTR) continue;
    }
    if (n < 0) reply_file_error(c, pr->id, "read failed:", "");
    else reply_ok(c, pr->id);
    close(pr->fd);
    memmove(c->reads, c->reads + 1, (size_t)(c->nreads - 1) * sizeof c->reads[0]);
    c->nreads--;
  }
}

/* Stateless chunked write: each chunk opens, writes and closes, so nothing is left open between frames. */
static int req_write(struct conn *c, uint32_t id, struct rd *r) {
  uint32_t flags = get_u32(r), mode = get_u32(r);
  const char *path = get_str(r);
  if (r->bad || (flags & ~(uint32_t)(WRITE_APPEND | WRITE_TRUNCATE | WRITE_MODE)) != 0 ||
      !(flags & WRITE_APPEND) == !(flags & WRITE_TRUNCATE))
    return 0;
  const uint8_t *data = r->p;
  size_t n = (size_t)(r->end - r->p);
  mode_t create_mode = (flags & WRITE_MODE) ? (mode_t)(mode & 0777) : 0644;
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | ((flags & WRITE_APPEND) ? O_APPEND : O_TRUNC),
                create_mode);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    reply_file_error(c, id, "cannot write", path);
    if (fd >= 0) close(fd);
    return 1;
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    errno = EINVAL;
    reply_file_error(c, id, "cannot write (not a regular file)", path);
    return 1;
  }
  if ((flags & WRITE_MODE) && fchmod(fd, create_mode) != 0) {
    reply_file_error(c, id, "cannot set the mode of", path);
    close(fd);
    return 1;
  }
  while (n > 0) {
    ssize_t w = write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      reply_file_error(c, id, "cannot write", path);
      close(fd);
      return 1;
    }
    data += w;
    n -= (size_t)w;
  }
  if (close(fd) != 0) reply_file_error(c, id, "cannot write", path);
  else reply_ok(c, id);
  return 1;
}

static int mkdir_parents(const char *path, mode_t mode) {
  char tmp[PATH_MAX];
  size_t len = strlen(path);
  if (len >= sizeof tmp) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(tmp, path, len + 1);
  for (char *s = tmp + 1; *s != '\0'; s++) {
    if (*s != '/') continue;
    *s = '\0';
    if (mkdir(tmp, mode) != 0 && errno != EEXIST) return -1;
    *s = '/';
  }
  if (mkdir(tmp, mode) == 0) return 0;
  struct stat st;
  if (errno != EEXIST || stat(tmp, &st) != 0) return -1;
  if (!S_ISDIR(st.st_mode)) {
    errno = EEXIST;
    return -1;
  }
  return 0;
}

static int req_mkdir(struct conn *c, uint32_t id, struct rd *r) {
  uint32_t flags = get_u32(r), mode = get_u32(r);
  const char *path = get_str(r);
  if (!rd_done(r) || (flags & ~1u) != 0) return 0;
  int rc = (flags & 1) ? mkdir_parents(path, (mode_t)(mode & 0777)) : mkdir(path, (mode_t)(mode & 0777));
  if (rc != 0) reply_file_error(c, id, "cannot create directory", path);
  else reply_ok(c, id);
  return 1;
}

static int req_rename(struct conn *c, uint32_t id, struct rd *r) {
  const char *from = get_str(r), *to = get_str(r);
  if (!rd_done(r)) return 0;
  if (rename(from, to) != 0) reply_file_error(c, id, "cannot rename", from);
  else reply_ok(c, id);
  return 1;
}

/* Remove name under dirfd; a directory is emptied through descriptors opened with O_NOFOLLOW, so a symlink is
 * removed itself and never followed. */
static int remove_tree_at(int dirfd, const char *name, int depth) {
  if (unlinkat(dirfd, name, 0) == 0) return 0;
  if (errno != EISDIR) return -1;
  if (depth >= 256) {
    errno = ELOOP;
    return -1;
  }
  for (int pass = 0; pass < 3; pass++) {
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
      close(fd);
      return -1;
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) rc = remove_tree_at(fd, e->d_name, depth + 1);
    }
    int err = errno;
    closedir(d);
    if (rc != 0) {
      errno = err;
      return -1;
    }
    if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0) return 0;
    if (errno != ENOTEMPTY) return -1; /* something was created meanwhile: go again */
  }
  return -1;
}

static int req_remove(struct conn *c, uint32_t id, struct rd *r) {
  uint32_t flags = get_u32(r);
  const char *path = get_str(r);
  if (!rd_done(r) || (flags & ~1u) != 0) return 0;
  int rc;
  if (flags & 1) {
    rc = remove_tree_at(AT_FDCWD, path, 0);
  } else {
    rc = unlink(path);
    if (rc != 0 && errno == EISDIR) rc = rmdir(path);
  }
  if (rc != 0) reply_file_error(c, id, "cannot remove", path);
  else reply_ok(c, id);
  return 1;
}

/* ---- watches: one inotify instance; a watch id maps to one wd per watched directory ---- */

static void watch_remove_if(int (*pred)(const struct watch *, const void *), const void *arg) {
  size_t k = 0;
  for (size_t i = 0; i < S.nwatches; i++) {
    if (!pred(&S.watches[i], arg)) {
      S.watches[k++] = S.watches[i];
      continue;
    }
    int wd = S.watches[i].wd, shared = 0;
    for (size_t j = 0; j < S.nwatches; j++) shared |= j != i && S.watches[j].wd == wd && !pred(&S.watches[j], arg);
    if (!shared && wd >= 0) inotify_rm_watch(S.ino_fd, wd);
    free(S.watches[i].path);
  }
  S.nwatches = k;
}
static int pred_watch_id(const struct watch *w, const void *arg) { return w->watch_id == *(const uint32_t *)arg; }
static int pred_conn(const struct watch *w, const void *arg) { return w->conn == *(const int *)arg; }
static int pred_wd(const struct watch *w, const void *arg) {
  if (w->wd != *(const int *)arg) return 0;
  ((struct watch *)w)->wd = -1; /* the kernel already dropped it: no rm_watch */
  return 1;
}

/* Watch the object behind fd (through /proc/self/fd, so no path is resolved twice), and its subdirectories
 * when recursive. Best effort below the root: a subdirectory that cannot be watched is skipped. */
static int watch_tree(int fd, const char *path, const struct watch *tmpl, int depth) {
  if (S.nwatches >= MAX_WATCHES) {
    errno = ENOSPC;
    return -1;
  }
  char proc_path[64];
  snprintf(proc_path, sizeof proc_path, "/proc/self/fd/%d", fd);
  int wd = inotify_add_watch(S.ino_fd, proc_path, WATCH_MASK);
  if (wd < 0) return -1;
  for (size_t i = 0; i < S.nwatches; i++)
    if (S.watches[i].wd == wd && S.watches[i].watch_id == tmpl->watch_id) return 0; /* already watched */
  if (S.nwatches == S.watch_cap) {
    size_t cap = S.watch_cap ? S.watch_cap * 2 : 16;
    struct watch *w = realloc(S.watches, cap * sizeof *w);
    if (w == NULL) die_all("out of memory", 70);
    S.watches = w;
    S.watch_cap = cap;
  }
  struct watch *w = &S.watches[S.nwatches++];
  *w = *tmpl;
  w->wd = wd;
  w->path = strdup(path);
  if (w->path == NULL) die_all("out of memory", 70);
  if (!tmpl->recursive || depth >= MAX_DEPTH) return 0;
  int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK);
  if (dfd < 0) return 0; /* not a directory */
  DIR *d = fdopendir(dfd);
  if (d == NULL) {
    close(dfd);
    return 0;
  }
  struct dirent *e;
  char child[PATH_MAX];
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN) continue;
    int n = snprintf(child, sizeof child, "%s/%s", path, e->d_name);
    if (n < 0 || (size_t)n >= sizeof child) continue;
    int sub = openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (sub < 0) continue;
    watch_tree(sub, child, tmpl, depth + 1);
    close(sub);
  }
  closedir(d);
  return 0;
}

static int req_watch(struct conn *c, int slot, uint32_t id, struct rd *r) {
  uint32_t flags = get_u32(r);
  const char *path = get_str(r);
  if (!rd_done(r) || (flags & ~1u) != 0) return 0;
  if (S.ino_fd < 0) {
    S.ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (S.ino_fd < 0) {
      reply_file_error(c, id, "cannot watch", path);
      return 1;
    }
    ep_ctl(EPOLL_CTL_ADD, S.ino_fd, EPOLLIN, ekey(K_INOTIFY, 0, 0));
  }
  int fd = open(path, O_PATH | O_CLOEXEC);
  struct watch tmpl = {.conn = slot, .conn_gen = c->gen, .recursive = (int)(flags & 1), .watch_id = ++S.next_watch_id};
  char root[PATH_MAX];
  snprintf(root, sizeof root, "%s", path);
  for (size_t n = strlen(root); n > 1 && root[n - 1] == '/';) root[--n] = '\0';
  if (fd < 0 || watch_tree(fd, root, &tmpl, 0) != 0) {
    int err = errno;
    if (fd >= 0) close(fd);
    watch_remove_if(pred_watch_id, &tmpl.watch_id);
    errno = err;
    reply_file_error(c, id, "cannot watch", path);
    return 1;
  }
  close(fd);
  size_t at = frame_begin(&c->out, T_WATCH_OK, id);
  put_u32(&c->out, tmpl.watch_id);
  frame_end(&c->out, at);
  return 1;
}

static int req_unwatch(struct conn *c, uint32_t id, struct rd *r) {
  uint32_t watch_id = get_u32(r);
  if (!rd_done(r)) return 0;
  int found = 0;
  for (size_t i = 0; i < S.nwatches; i++) found |= S.watches[i].watch_id == watch_id && S.watches[i].conn_gen == c->gen;
  if (!found) {
    reply_error(c, id, "BAD_REQUEST", ENOENT, "no watch %u on this connection", watch_id);
    return 1;
  }
  watch_remove_if(pred_watch_id, &watch_id);
  reply_ok(c, id);
  return 1;
}

static void on_inotify(void) {
  _Alignas(struct inotify_event) uint8_t events[65536];
  ssize_t n = read(S.ino_fd, events, sizeof events);
  for (uint8_t *q = events; n > 0 && q < events + n;) {
    const struct inotify_event *ev = (const struct inotify_event *)q;
    q += sizeof *ev + ev->len;
    uint32_t m = ev->mask;
    if (m & IN_IGNORED) {
      int wd = ev->wd;
      watch_remove_if(pred_wd, &wd);
      continue;
    }
    int kind = (m & (IN_CREATE | IN_MOVED_TO)) ? 1 : (m & IN_MODIFY) ? 2 : (m & (IN_DELETE | IN_DELETE_SELF)) ? 3
             : (m & IN_MOVED_FROM) ? 4 : (m & IN_ATTRIB) ? 5 : 0;
    if (kind == 0) continue;
    const char *name = ev->len > 0 ? ev->name : "";
    size_t count = S.nwatches; /* watches added below (new subdirectories) need no event for this one */
    for (size_t i = 0; i < count; i++) {
      if (S.watches[i].wd != ev->wd) continue;
      struct watch w = S.watches[i];
      char path[PATH_MAX];
      int len = name[0] ? snprintf(path, sizeof path, "%s/%s", w.path, name) : snprintf(path, sizeof path, "%s", w.path);
      if (len < 0 || (size_t)len >= sizeof path) continue;
      struct conn *c = &S.conns[w.conn];
      if (c->fd >= 0 && c->authed && c->gen == w.conn_gen) {
        size_t at = frame_begin(&c->out, T_FS_EVENT, 0);
        put_u32(&c->out, w.watch_id);
        put_u8(&c->out, (uint8_t)kind);
        put_str(&c->out, path);
        frame_end(&c->out, at);
      }
      if (w.recursive && (m & IN_ISDIR) && kind == 1) {
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0) {
          watch_tree(fd, path, &w, 1);
          close(fd);
        }
      }
    }
  }
}

/* ---- connections ---- */

static void conn_close(int slot) {
  struct conn *c = &S.conns[slot];
  if (c->fd < 0) return;
  close(c->fd);
  c->fd = -1;
  for (int i = 0; i < c->nreads; i++) close(c->reads[i].fd);
  c->nreads = 0;
  buf_free(&c->in);
  buf_free(&c->out);
  watch_remove_if(pred_conn, &slot);
  if (c->authed && --S.authed_count == 0) S.orphan_deadline = now_ms() + S.orphan_ms;
  c->authed = 0;
}

static void conn_service(int slot) {
  struct conn *c = &S.conns[slot];
  if (c->fd < 0) return;
  for (;;) {
    pump_reads(c);
    if (buf_pending(&c->out) == 0) break;
    ssize_t n = send(c->fd, c->out.p + c->out.off, buf_pending(&c->out), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      buf_consume(&c->out, (size_t)n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      break;
    } else {
      conn_close(slot);
      return;
    }
  }
  if (buf_pending(&c->out) > OUT_DROP) {
    conn_close(slot);
    return;
  }
  int want = buf_pending(&c->out) > 0 || c->nreads > 0;
  if (want != c->out_armed) {
    ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN | (want ? EPOLLOUT : 0), ekey(K_CONN, slot, 0));
    c->out_armed = want;
  }
}

static int handle_hello(struct conn *c, uint32_t id, struct rd *r) {
  uint32_t version = get_u32(r);
  if (r->bad || (size_t)(r->end - r->p) != TOKEN_LEN) return 0;
  /* Constant time: how much of a guess matched must not show in how long the refusal takes. */
  uint8_t diff = 0;
  for (int i = 0; i < TOKEN_LEN; i++) diff |= (uint8_t)(r->p[i] ^ S.token[i]);
  if (diff != 0) return 0;
  if (version != PROTO_VERSION) {
    reply_error(c, id, "VERSION_MISMATCH", 0, "the agent speaks protocol %d, the host %u", PROTO_VERSION, version);
    return 0; /* the caller sends this reply, then drops the connection */
  }
  c->authed = 1;
  S.authed_count++;
  S.orphan_deadline = -1;
  size_t at = frame_begin(&c->out, T_HELLO_OK, id);
  put_u32(&c->out, PROTO_VERSION);
  put_u32(&c->out, (uint32_t)getpid());
  put_u32(&c->out, 0); /* feature bits, none yet */
  frame_end(&c->out, at);
  return 1;
}

/* Returns 0 when the frame is malformed or not allowed: the caller drops the connection. */
static int handle_frame(int slot, uint8_t type, uint32_t id, const uint8_t *payload, uint32_t len) {
  struct conn *c = &S.conns[slot];
  struct rd r = {payload, payload + len, 0};
  if (!c->authed) return type == T_HELLO && handle_hello(c, id, &r);
  if (id == 0) return 0; /* id 0 is reserved for events */
  switch (type) {
  case T_SPAWN: return req_spawn(c, id, &r);
  case T_STDIN: return req_stdin(c, id, &r, 0);
  case T_STDIN_CLOSE: return req_stdin(c, id, &r, 1);
  case T_SIGNAL: return req_signal(c, id, &r);
  case T_RESIZE: return req_resize(c, id, &r);
  case T_LIST_PROCS: return req_list_procs(c, id, &r);
  case T_REPLAY: return req_replay(c, id, &r);
  case T_SHUTDOWN:
    if (!rd_done(&r)) return 0;
    reply_ok(c, id);
    (void)!send(c->fd, c->out.p + c->out.off, buf_pending(&c->out), MSG_NOSIGNAL | MSG_DONTWAIT);
    die_all(NULL, 0);
    return 0;
  case T_READ: return req_read(c, id, &r);
  case T_WRITE: return req_write(c, id, &r);
  case T_LIST_DIR: return req_list_dir(c, id, &r);
  case T_STAT: return req_stat(c, id, &r);
  case T_MKDIR: return req_mkdir(c, id, &r);
  case T_RENAME: return req_rename(c, id, &r);
  case T_REMOVE: return req_remove(c, id, &r);
  case T_WATCH: return req_watch(c, slot, id, &r);
  case T_UNWATCH: return req_unwatch(c, id, &r);
  default: return 0;
  }
}

static void on_conn_readable(int slot) {
  struct conn *c = &S.conns[slot];
  buf_reserve(&c->in, 65536);
  ssize_t n = read(c->fd, c->in.p + c->in.len, 65536);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    conn_close(slot);
    return;
  }
  c->in.len += (size_t)n;
  while (c->fd >= 0 && buf_pending(&c->in) >= HDR_LEN) {
    const uint8_t *h = c->in.p + c->in.off;
    uint32_t len = le32(h);
    if (len > (c->authed ? MAX_PAYLOAD : PREAUTH_MAX_PAYLOAD)) {
      conn_close(slot);
      return;
    }
    if (buf_pending(&c->in) < HDR_LEN + (size_t)len) break;
    if (!handle_frame(slot, h[4], le32(h + 5), h + HDR_LEN, len)) {
      /* Replies to the frames before the bad one still go out (best effort), then the connection ends. */
      (void)!send(c->fd, c->out.p + c->out.off, buf_pending(&c->out), MSG_NOSIGNAL | MSG_DONTWAIT);
      conn_close(slot);
      return;
    }
    buf_consume(&c->in, HDR_LEN + (size_t)len);
  }
}

static void on_accept(void) {
  for (;;) {
    int fd = accept4(S.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    /* The host connects from outside the sandbox's PID namespace, so the kernel reports its pid as 0 here;
     * a process of the sandbox itself has a real pid and is turned away before it can send a byte. */
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid != 0) {
      close(fd);
      continue;
    }
    int slot = -1;
    for (int i = 0; i < MAX_CONNS && slot < 0; i++)
      if (S.conns[i].fd < 0) slot = i;
    if (slot < 0) {
      close(fd);
      continue;
    }
    struct conn *c = &S.conns[slot];
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->gen = ++S.conn_gen;
    c->hello_deadline = now_ms() + HELLO_DEADLINE_MS;
    /* A host is knocking: it gets its HELLO window before any orphan verdict. After a thaw (a manager that
     * adopts a paused sandbox connects, then resumes it) the orphan clock may already have run out. */
    if (S.orphan_deadline >= 0 && S.orphan_deadline < c->hello_deadline) S.orphan_deadline = c->hello_deadline;
    ep_ctl(EPOLL_CTL_ADD, fd, EPOLLIN, ekey(K_CONN, slot, 0));
  }
}

static void serve_usage(const char *why) {
  fprintf(stderr, "ironcage-agent serve: %s\nusage: ironcage-agent serve --socket PATH --token-fd N "
                  "[--orphan-timeout SECONDS] [--ready-fd N] [--relay PORT:SOCKETPATH]\n", why);
  exit(125);
}

static int parse_fd_arg(const char *text) {
  char *end = NULL;
  long v = strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < 3 || v > 1 << 20 || fcntl((int)v, F_GETFD) < 0) return -1;
  return (int)v;
}

static int run_serve(int argc, char **argv) {
  int token_fd = -1, ready_fd = -1;
  long orphan_s = 30;
  const char *relay_spec = NULL;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
      S.socket_path = argv[++i];
    } else if (strcmp(argv[i], "--token-fd") == 0 && i + 1 < argc) {
      if ((token_fd = parse_fd_arg(argv[++i])) < 0) serve_usage("--token-fd is not an open descriptor");
    } else if (strcmp(argv[i], "--ready-fd") == 0 && i + 1 < argc) {
      if ((ready_fd = parse_fd_arg(argv[++i])) < 0) serve_usage("--ready-fd is not an open descriptor");
    } else if (strcmp(argv[i], "--orphan-timeout") == 0 && i + 1 < argc) {
      char *end = NULL;
      orphan_s = strtol(argv[++i], &end, 10);
      if (*end != '\0' || end == argv[i] || orphan_s < 0 || orphan_s > 7 * 86400) serve_usage("bad --orphan-timeout");
    } else if (strcmp(argv[i], "--relay") == 0 && i + 1 < argc && relay_spec == NULL) {
      relay_spec = argv[++i];
    } else {
      serve_usage("unknown option");
    }
  }
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (S.socket_path == NULL || token_fd < 0) serve_usage("--socket and --token-fd are required");
  if (strlen(S.socket_path) >= sizeof addr.sun_path) serve_usage("socket path too long");
  /* kill(-1) on the way out must only ever mean "this sandbox": refuse to run outside a PID namespace. */
  if (getpid() != 1) serve_usage("serve must run as PID 1 of the sandbox's PID namespace (bwrap --as-pid-1)");

  /* The relay is forked before the token is read and before the host socket exists, so its memory never holds
   * the token and it has no descriptor of the host side. It listens before `ready`, so no command can race it.
   * It is an unknown child to reap() (ignored there) and dies with us (PDEATHSIG, and kill(-1) on the way out). */
  if (relay_spec != NULL) {
    char relay_path[sizeof addr.sun_path];
    int relay_fd = relay_listen(relay_spec, relay_path, sizeof relay_path);
    pid_t relay = fork();
    if (relay < 0) serve_usage("cannot fork the egress relay");
    if (relay == 0) {
      close(token_fd);
      if (ready_fd >= 0) close(ready_fd);
      relay_run(relay_fd, relay_path, 1);
    }
    close(relay_fd);
  }

  ssize_t got = 0, n;
  uint8_t extra;
  while (got < TOKEN_LEN && ((n = read(token_fd, S.token + got, (size_t)(TOKEN_LEN - got))) > 0 || (n < 0 && errno == EINTR)))
    if (n > 0) got += n;
  while ((n = read(token_fd, &extra, 1)) < 0 && errno == EINTR) {
  }
  close(token_fd);
  if (got != TOKEN_LEN || n != 0) serve_usage("the token descriptor must carry exactly 32 bytes, then end");

  /* Same-uid sandbox processes must not read our memory (the token) through /proc/1/mem or ptrace. */
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  /* Children's stdio is always set explicitly, but nothing we open may land on 0-2 by accident. */
  for (int fd = 0; fd < 3; fd++)
    if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd) serve_usage("cannot open /dev/null");
  /* As PID 1, signals without a handler are dropped when they come from inside the namespace. SIGCHLD is
   * taken through a signalfd; SIGPIPE is ignored so a vanished host is an EPIPE, not our death. */
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  signal(SIGPIPE, SIG_IGN);
  S.sig_fd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  S.ino_fd = -1;
  S.ep = epoll_create1(EPOLL_CLOEXEC);
  if (S.sig_fd < 0 || S.ep < 0) serve_usage("cannot create the event loop");

  strcpy(addr.sun_path, S.socket_path);
  unlink(S.socket_path); /* a stale socket of an earlier agent */
  S.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  mode_t old_umask = umask(0177); /* the socket is created 0600 */
  int bound = S.listen_fd >= 0 && bind(S.listen_fd, (struct sockaddr *)&addr, sizeof addr) == 0;
  umask(old_umask);
  if (!bound || listen(S.listen_fd, 16) != 0) {
    fprintf(stderr, "ironcage-agent: cannot listen on %s: %s\n", S.socket_path, strerror(errno));
    return 125;
  }
  for (int i = 0; i < MAX_CONNS; i++) S.conns[i].fd = -1;
  ep_ctl(EPOLL_CTL_ADD, S.listen_fd, EPOLLIN, ekey(K_LISTEN, 0, 0));
  ep_ctl(EPOLL_CTL_ADD, S.sig_fd, EPOLLIN, ekey(K_SIGNAL, 0, 0));
  S.orphan_ms = orphan_s * 1000;
  S.orphan_deadline = now_ms() + (S.orphan_ms > STARTUP_GRACE_MS ? S.orphan_ms : STARTUP_GRACE_MS);
  if (ready_fd >= 0) {
    (void)!write(ready_fd, "ready\n", 6);
    close(ready_fd);
  }

  struct epoll_event events[64];
  for (;;) {
    int64_t now = now_ms(), next = S.orphan_deadline;
    for (int i = 0; i < MAX_CONNS; i++)
      if (S.conns[i].fd >= 0 && !S.conns[i].authed && (next < 0 || S.conns[i].hello_deadline < next))
        next = S.conns[i].hello_deadline;
    for (int i = 0; i < MAX_PROCS; i++)
      if (S.procs[i].used && S.procs[i].exit_deadline > 0 && (next < 0 || S.procs[i].exit_deadline < next))
        next = S.procs[i].exit_deadline;
    int timeout = next < 0 ? -1 : next <= now ? 0 : (int)(next - now > 60000 ? 60000 : next - now);
    int ready = epoll_wait(S.ep, events, 64, timeout);
    if (ready < 0 && errno != EINTR) die_all("epoll_wait failed", 70);
    for (int e = 0; e < ready; e++) {
      uint64_t key = events[e].data.u64;
      int kind = (int)(key >> 32), slot = (int)((key >> 8) & 0xffffff), sub = (int)(key & 0xff);
      uint32_t ev = events[e].events;
      if (kind == K_LISTEN) {
        on_accept();
      } else if (kind == K_SIGNAL) {
        struct signalfd_siginfo si;
        while (read(S.sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        }
        reap();
      } else if (kind == K_CONN) {
        if (S.conns[slot].fd < 0) continue;
        if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_conn_readable(slot);
        if (S.conns[slot].fd >= 0 && (ev & EPOLLOUT)) conn_service(slot);
      } else if (kind == K_OUT || kind == K_PTY) {
        struct proc *p = &S.procs[slot];
        if (!p->used) continue;
        if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) proc_read(p, sub);
        if (kind == K_PTY && (ev & EPOLLOUT)) proc_flush_stdin(p, slot);
      } else if (kind == K_IN) {
        if (S.procs[slot].used) proc_flush_stdin(&S.procs[slot], slot);
      } else if (kind == K_INOTIFY) {
        on_inotify();
      } else if (kind == K_AUDIT) {
        on_audit(slot, ev);
      }
    }
    now = now_ms();
    for (int i = 0; i < MAX_PROCS; i++)
      if (S.procs[i].used && S.procs[i].exit_deadline > 0 && now >= S.procs[i].exit_deadline) {
        proc_read(&S.procs[i], 0); /* whatever arrived meanwhile goes first */
        if (S.procs[i].exit_deadline > 0) proc_send_exit(&S.procs[i]);
      }
    for (int i = 0; i < MAX_CONNS; i++) conn_service(i);
    for (int i = 0; i < MAX_CONNS; i++)
      if (S.conns[i].fd >= 0 && !S.conns[i].authed && now >= S.conns[i].hello_deadline) conn_close(i);
    if (S.authed_count == 0 && S.orphan_deadline >= 0 && now >= S.orphan_deadline)
      die_all("no host connected within --orphan-timeout", 2);
  }
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "probe") == 0) return probe();
  if (argc >= 2 && strcmp(argv[1], "exec") == 0) return run_exec(argc - 2, argv + 2);
  if (argc >= 2 && strcmp(argv[1], "serve") == 0) return run_serve(argc - 2, argv + 2);
  usage_exit("unknown subcommand");
  return 125;
}
