/*
 * ironcage-agent: the one small native program of ironcage. It runs INSIDE the sandbox, already confined by
 * bubblewrap (namespaces, no capabilities, seccomp, read-only system), and does what Node cannot do for a
 * child: set per-command rlimits, observe the command's exact end and resource use, and report them on a
 * status pipe. It holds no privilege the command does not also have. Built with the system compiler at
 * setup (scripts/build-native.mjs); no third-party code.
 *
 *   ironcage-agent exec [--rlimit NAME=SOFT:HARD]... [--status-fd N] [--seccomp-fd N] -- ARGV...
 *   ironcage-agent probe        prints {"landlock_abi":N} (N < 0: Landlock unavailable) for `ironcage doctor`
 *
 * --seccomp-fd: a classic-BPF program (as for bwrap --seccomp) stacked on top of the sandbox's filter in the
 * command's process only, for profiles stricter than what the agent itself needs (it must fork and wait).
 *
 * Status line written to --status-fd when the command ends (one JSON object, newline-terminated):
 *   {"v":1,"exit":CODE}  or  {"v":1,"signal":SIGNO}  or  {"v":1,"exec_errno":ERRNO}
 *   plus "utime_us", "stime_us", "maxrss_kb" of the command and every descendant it waited for.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
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
  fprintf(stderr, "ironcage-agent: %s\nusage: ironcage-agent exec [--rlimit NAME=SOFT:HARD]... [--status-fd N] [--seccomp-fd N] -- ARGV...\n"
                  "       ironcage-agent probe\n", why);
  exit(125);
}

static rlim_t parse_limit(const char *text, const char *arg) {
  if (strcmp(text, "inf") == 0) return RLIM_INFINITY;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0') {
    fprintf(stderr, "ironcage-agent: bad rlimit value in '%s'\n", arg);
    exit(125);
  }
  return (rlim_t)v;
}

static struct rlimit_request parse_rlimit(const char *arg) {
  struct rlimit_request req;
  const char *eq = strchr(arg, '=');
  const char *colon = eq ? strchr(eq, ':') : NULL;
  if (!eq || !colon) usage_exit("--rlimit takes NAME=SOFT:HARD");
  size_t name_len = (size_t)(eq - arg);
  req.resource = -1;
  for (size_t i = 0; i < sizeof rlimit_names / sizeof rlimit_names[0]; i++) {
    if (strlen(rlimit_names[i].name) == name_len && strncmp(arg, rlimit_names[i].name, name_len) == 0) {
      req.resource = rlimit_names[i].resource;
    }
  }
  if (req.resource < 0) usage_exit("unknown rlimit name");
  char soft[32];
  size_t soft_len = (size_t)(colon - eq - 1);
  if (soft_len == 0 || soft_len >= sizeof soft) usage_exit("bad rlimit value");
  memcpy(soft, eq + 1, soft_len);
  soft[soft_len] = '\0';
  req.value.rlim_cur = parse_limit(soft, arg);
  req.value.rlim_max = parse_limit(colon + 1, arg);
  if (req.value.rlim_cur > req.value.rlim_max) usage_exit("rlimit soft value above hard value");
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
  /* The agent blocks nothing, but restore defaults so the command sees a clean signal state. */
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

static int run_exec(int argc, char **argv) {
  struct rlimit_request limits[MAX_RLIMITS];
  int n_limits = 0;
  int status_fd = -1;
  struct sock_fprog filter;
  int have_filter = 0;
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
  struct rusage usage;
  memset(&usage, 0, sizeof usage);
  for (;;) {
    pid_t done = wait4(-1, &status, 0, &usage);
    if (done == child) break;
    if (done < 0 && errno != EINTR) {
      perror("ironcage-agent: wait4");
      return 125;
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

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "probe") == 0) return probe();
  if (argc >= 2 && strcmp(argv[1], "exec") == 0) return run_exec(argc - 2, argv + 2);
  usage_exit("unknown subcommand");
  return 125;
}
