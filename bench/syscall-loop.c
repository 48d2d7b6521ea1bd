/* Syscall micro-benchmark for ironcage's bench: times a few syscall-heavy loops and prints ns per call as
 * JSON, so the same binary can be timed inside and outside a sandbox. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(void) {
  const int n = 200000;
  char byte;
  double t0 = now_ns();
  for (int i = 0; i < n; i++) syscall(SYS_getppid);
  double t1 = now_ns();
  int zero = open("/dev/zero", O_RDONLY);
  for (int i = 0; i < n; i++) (void)!read(zero, &byte, 1);
  double t2 = now_ns();
  for (int i = 0; i < n / 4; i++) close(open("/dev/null", O_RDONLY));
  double t3 = now_ns();
  printf("{\"getppid\":%.1f,\"read\":%.1f,\"open_close\":%.1f}\n", (t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / (n / 4));
  return 0;
}
