// The rtt bench's native baseline: a UDP echo in C, compiled at bench time (scripts/bench/rtt.mjs)
// with the machine's cc. Two user-space processes, blocking syscalls, no runtime: what two
// user-space wake-ups per round trip cost on this machine. Prints JSON lines like echo-peer.mjs:
//   udp-echo server PORT                       echo every datagram back; {"ready":true}
//   udp-echo client HOST PORT COUNT GAP_US     COUNT 100-byte probes, one every GAP_US µs after
//                                              the reply (2 s timeout); {"rtts":[ms...]}
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static int usage(void) {
  fprintf(stderr, "usage: udp-echo server PORT | udp-echo client HOST PORT COUNT GAP_US\n");
  return 2;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int server(int port) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) return perror("udp-echo server"), 1;
  printf("{\"ready\":true}\n");
  fflush(stdout);
  char buf[2048];
  for (;;) {  // until killed
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    if (n > 0) sendto(s, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
  }
}

static int client(const char *host, int port, int count, long gap_us) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  struct timeval timeout = {.tv_sec = 2};
  if (s < 0 || inet_pton(AF_INET, host, &a.sin_addr) != 1 || connect(s, (struct sockaddr *)&a, sizeof a) < 0 ||
      setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) < 0)
    return perror("udp-echo client"), 1;
  struct timespec gap = {.tv_sec = gap_us / 1000000, .tv_nsec = (gap_us % 1000000) * 1000};
  char probe[100] = {0}, reply[2048];
  printf("{\"rtts\":[");
  int printed = 0;
  for (uint32_t seq = 0; seq < (uint32_t)count; seq++) {
    memcpy(probe, &seq, sizeof seq);
    double t0 = now_ms();
    if (send(s, probe, sizeof probe, 0) < 0) return perror("send"), 1;
    for (;;) {  // a late reply to an earlier probe is skipped
      ssize_t n = recv(s, reply, sizeof reply, 0);
      if (n < 0) break;  // timed out: no sample
      if (n >= (ssize_t)sizeof seq && memcmp(reply, &seq, sizeof seq) == 0) {
        printf("%s%.6f", printed++ ? "," : "", now_ms() - t0);
        break;
      }
    }
    nanosleep(&gap, NULL);
  }
  printf("]}\n");
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "server") == 0) return server(atoi(argv[2]));
  if (argc == 6 && strcmp(argv[1], "client") == 0) return client(argv[2], atoi(argv[3]), atoi(argv[4]), atol(argv[5]));
  return usage();
}
