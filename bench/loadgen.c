/*
 * loadgen: websock's closed-loop WebSocket echo load generator (RFC 6455).
 *
 * One thread, epoll (edge-triggered), non-blocking sockets, loopback only.
 * Every connection keeps `depth` messages in flight: each echo that comes back
 * completes the oldest message (latency = now - time it was queued) and queues
 * one more. Built so that it is not the bottleneck:
 *
 *   - all outgoing frames are prepared once (masked with per-frame keys that
 *     differ within a period of K frames); sending is a pointer into that
 *     buffer, never a copy or a re-mask;
 *   - reads land in one large shared buffer and are parsed in place (server
 *     frames are only counted and checked, not copied; --verify compares);
 *   - at most one write(2) per connection per loop iteration, issued after
 *     every ready socket has been read, so all echoes that arrived together are
 *     answered with one batch;
 *   - one clock read per loop iteration.
 *
 * It reports msgs/s, MB/s (payload bytes one way, 1e6), latency percentiles in
 * microseconds, its own CPU share (getrusage), the server's CPU share (--pid,
 * /proc/PID/stat), per-core busy shares and the CPU used by other processes
 * (/proc/stat) so that a noisy run can be recognised. --idle opens N
 * connections, holds them, and reports the server's RSS growth per connection
 * (/proc/PID/status). --deflate offers permessage-deflate (RFC 7692) with
 * client_no_context_takeover, so that one message compressed up front is a
 * valid payload for every send.
 *
 * Output: one JSON object on stdout. Build: gcc -O2 -o loadgen loadgen.c -lz
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* ---------------------------------------------------------------- options */

static const char *o_host = "127.0.0.1";
static int o_port = 0;
static const char *o_path = "/ws";
static int o_conns = 1;
static uint64_t o_size = 16;
static int o_binary = 0;
static int o_depth = 1;
static double o_seconds = 5;
static double o_warmup = 1;
static int o_pid = 0;
static int o_idle = 0;
static double o_hold = 2;
static int o_open_par = 128;
static double o_timeout = 30;
static int o_deflate = 0;
static int o_verify = 0;
static int o_echo_once = 0;
static const char *o_deflate_offer = "client_no_context_takeover"; /* the offer's parameters */
static int o_allow_masked = 0;
static uint64_t o_max_write = 0; /* 0: no cap on one write */
static int o_fanout = 0;
static double o_fan_timeout = 5; /* seconds a publish may take before it counts as incomplete */

static void usage(void) {
  fprintf(stderr,
          "usage: loadgen --port N [--host 127.0.0.1] [--path /ws]\n"
          "               [--conns N] [--size BYTES] [--text|--binary] [--depth N]\n"
          "               [--seconds T] [--warmup T] [--pid PID] [--deflate] [--verify]\n"
          "       loadgen --idle --port N --conns N --pid PID [--hold T] [--echo-once]\n"
          "  --echo-once    (idle) every connection echoes one message first, e.g. so that\n"
          "                 permessage-deflate contexts exist when the RSS is read\n"
          "  --deflate-offer P  the parameters offered after permessage-deflate (default\n"
          "                 client_no_context_takeover; \"client_max_window_bits\" is Chromium's);\n"
          "                 only valid for --idle --echo-once unless it keeps client_no_context_takeover\n"
          "  --open-par N   handshakes in progress at once (default 128)\n"
          "  --timeout T    seconds allowed for all handshakes (default 30)\n"
          "  --allow-masked accept masked server frames (a raw TCP reflector as the ceiling);\n"
          "                 without it they fail the connection (RFC 6455 5.1)\n"
          "       loadgen --fanout --port N --conns N [--size BYTES >= 8] [--depth N] [--fan-timeout T] ...\n"
          "  --fanout       connection 0 publishes binary messages carrying a sequence number, the\n"
          "                 other N-1 only receive; the server must forward each to all of them.\n"
          "                 --depth publishes are in flight: the next goes out when one is complete\n"
          "                 (every subscriber got it) or older than --fan-timeout (default 5 s)\n");
}

/* ---------------------------------------------------------------- time, cpu */

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* our own CPU time in microseconds: user, and system (the kernel's TCP work on our behalf) */
static void self_cpu_us(uint64_t *user, uint64_t *sys) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *user = (uint64_t)ru.ru_utime.tv_sec * 1000000ull + (uint64_t)ru.ru_utime.tv_usec;
  *sys = (uint64_t)ru.ru_stime.tv_sec * 1000000ull + (uint64_t)ru.ru_stime.tv_usec;
}

/* utime + stime of a process in clock ticks, -1 if unreadable */
static long long proc_cpu_ticks(int pid) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')'); /* comm may contain spaces: fields restart after the last ')' */
  if (!p) return -1;
  unsigned long long ut = 0, st = 0;
  /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return -1;
  return (long long)(ut + st);
}

/* VmRSS of a process in KiB, -1 if unreadable */
static long proc_rss_kib(int pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) {
      kib = strtol(line + 6, NULL, 10);
      break;
    }
  fclose(f);
  return kib;
}

#define MAX_CORES 64
typedef struct {
  int n;
  unsigned long long busy[MAX_CORES], total[MAX_CORES];
} cores_t;

/* per-core busy and total ticks from /proc/stat */
static void read_cores(cores_t *c) {
  c->n = 0;
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f) && c->n < MAX_CORES) {
    if (strncmp(line, "cpu", 3) != 0 || !isdigit((unsigned char)line[3])) continue;
    unsigned long long v[8] = {0};
    int id;
    if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &id, &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]) < 9)
      continue;
    /* user nice system idle iowait irq softirq steal */
    unsigned long long idle = v[3] + v[4];
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    c->busy[c->n] = busy;
    c->total[c->n] = busy + idle;
    c->n++;
  }
  fclose(f);
}

/* ---------------------------------------------------------------- sha1, base64 */

static inline uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const uint8_t *msg, size_t len, uint8_t out[20]) {
  uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
  size_t total = ((len + 8) / 64 + 1) * 64;
  uint8_t *m = calloc(total, 1);
  memcpy(m, msg, len);
  m[len] = 0x80;
  uint64_t bits = (uint64_t)len * 8;
  for (int i = 0; i < 8; i++) m[total - 1 - i] = (uint8_t)(bits >> (8 * i));
  for (size_t blk = 0; blk < total; blk += 64) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
      w[i] = (uint32_t)m[blk + 4 * i] << 24 | (uint32_t)m[blk + 4 * i + 1] << 16 | (uint32_t)m[blk + 4 * i + 2] << 8 |
             (uint32_t)m[blk + 4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
      uint32_t f, k;
      if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999u;
      else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1u;
      else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDCu;
      else f = b ^ c ^ d, k = 0xCA62C1D6u;
      uint32_t t = rol(a, 5) + f + e + k + w[i];
      e = d, d = c, c = rol(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
  }
  free(m);
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
}

static void base64(const uint8_t *in, size_t n, char *out) {
  static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
    out[o++] = T[(v >> 18) & 63];
    out[o++] = T[(v >> 12) & 63];
    out[o++] = i + 1 < n ? T[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? T[v & 63] : '=';
  }
  out[o] = 0;
}

static void random_bytes(void *p, size_t n) {
  uint8_t *b = p;
  while (n > 0) {
    ssize_t r = getrandom(b, n, 0);
    if (r <= 0) { /* not expected on Linux >= 3.17; fall back to a weak source */
      for (size_t i = 0; i < n; i++) b[i] = (uint8_t)rand();
      return;
    }
    b += r, n -= (size_t)r;
  }
}

/* ---------------------------------------------------------------- latency histogram */

/* log-linear: values < 128 ns exact, above that 64 sub-buckets per power of two
 * (relative error < 1.6%). Index bound covers ~2^40 ns (18 minutes). */
#define H_BUCKETS (64 * 64)
typedef struct {
  uint64_t b[H_BUCKETS];
  uint64_t n, max;
} hist_t;
static hist_t lat;      /* every echo (fan-out: every delivery) */
static hist_t lat_last; /* fan-out: publish to its last delivery */

static inline void hist_add(hist_t *h, uint64_t v) {
  unsigned idx;
  if (v < 128) idx = (unsigned)v;
  else {
    int bits = 64 - __builtin_clzll(v);
    int shift = bits - 7;
    idx = (unsigned)((shift + 1) * 64 + (int)((v >> shift) - 64));
    if (idx >= H_BUCKETS) idx = H_BUCKETS - 1;
  }
  h->b[idx]++;
  h->n++;
  if (v > h->max) h->max = v;
}

static double hist_pct(const hist_t *h, double p) {
  if (h->n == 0) return 0;
  uint64_t want = (uint64_t)(p * (double)h->n + 0.999999);
  if (want < 1) want = 1;
  uint64_t acc = 0;
  for (unsigned i = 0; i < H_BUCKETS; i++) {
    acc += h->b[i];
    if (acc >= want) {
      if (i < 128) return (double)i;
      unsigned shift = i / 64 - 1;
      uint64_t m = i % 64 + 64;
      uint64_t lo = m << shift, hi = ((m + 1) << shift) - 1;
      return ((double)lo + (double)hi) / 2;
    }
  }
  return (double)h->max;
}

/* ---------------------------------------------------------------- connections */

enum { S_CONNECTING, S_HANDSHAKE, S_OPEN, S_DEAD };

typedef struct {
  int fd;
  uint8_t state;
  uint8_t blocked;  /* last write was short: wait for EPOLLOUT */
  uint8_t dirty;    /* in the dirty list for this iteration */
  uint8_t deflate;  /* permessage-deflate negotiated */
  /* handshake */
  char key[32];
  char *hs;         /* response bytes so far (allocated while handshaking) */
  uint32_t hs_len;
  uint32_t req_sent;
  /* sending */
  uint64_t owed;    /* bytes of queued frames not yet written */
  uint64_t off;     /* position in the send buffer's period where `owed` starts */
  uint64_t *ts;     /* ring of queue times of messages in flight, capacity depth */
  uint32_t ts_head, ts_count;
  /* receive parser */
  uint8_t hdr[14];
  uint8_t hdr_have;
  uint8_t frame_fin, frame_ctrl, in_msg, msg_op, msg_rsv1, frame_masked;
  uint8_t mask[4];     /* the current frame's key, when a reflector sends masked frames */
  uint64_t frame_pos;  /* payload bytes of the current frame seen so far */
  uint64_t pay_left;   /* payload bytes of the current frame not yet seen */
  uint64_t msg_bytes;  /* payload bytes of the current message so far */
  /* fan-out (subscribers) */
  uint8_t seqb[8];     /* the first 8 payload bytes of the current message: its sequence number */
  uint64_t last_seq;   /* the highest sequence number this subscriber received */
} conn_t;

static conn_t *C;
static int epfd;
static struct sockaddr_in addr;

static uint8_t *sendbuf;        /* 2 * K frames, back to back */
static uint64_t frame_len;      /* bytes of one frame (header + payload) */
static uint64_t period;         /* K * frame_len */
static uint8_t *plain;          /* the message payload as the server must echo it */
static uint64_t wire_size;      /* payload bytes on the wire (compressed size with deflate) */
static int deflate_on;          /* the frames in sendbuf are compressed */

static int *dirty;              /* connections to flush at the end of the iteration */
static int n_dirty;

static uint8_t *rbuf;
#define RBUF_SIZE (4u << 20)

static int n_open, n_pending, n_hs_done;
static int sending, measuring;

/* counters (reset when measuring starts) */
static uint64_t m_bad_data; /* --verify: echoes whose bytes differ */
static uint64_t m_msgs, m_errors, m_bad_len, m_bad_op, m_ctrl, m_closed, m_hs_fail, m_reads, m_writes, m_rbytes,
    m_wbytes;

static const char *first_error; /* the first reason a connection failed, for the report */
static const char *proto_why;   /* why on_header rejected a frame */

/* close a connection: `why` is NULL for a planned close, else the error */
static void conn_kill(conn_t *c, const char *why) {
  if (c->state == S_DEAD) return;
  if (c->state == S_OPEN) n_open--;
  else n_pending--;
  if (why) {
    m_errors++;
    if (!first_error) first_error = why;
  } else m_closed++;
  c->state = S_DEAD;
  /* RST instead of FIN: no TIME_WAIT pile-up across thousands of connections */
  struct linger lg = {1, 0};
  setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(c->fd);
  free(c->hs);
  c->hs = NULL;
}

static void mark_dirty(int i) {
  if (!C[i].dirty) {
    C[i].dirty = 1;
    dirty[n_dirty++] = i;
  }
}

/* queue `k` messages on connection i, stamped `now` */
static void queue_msgs(int i, int k, uint64_t now) {
  conn_t *c = &C[i];
  for (int j = 0; j < k; j++) {
    c->ts[(c->ts_head + c->ts_count) % (uint32_t)o_depth] = now;
    c->ts_count++;
  }
  c->owed += (uint64_t)k * frame_len;
  mark_dirty(i);
}

/* one write per connection per iteration: everything owed, from the prepared buffer */
static void flush_publisher(void);

static void flush(int i) {
  conn_t *c = &C[i];
  if (o_fanout && i == 0) {
    flush_publisher();
    return;
  }
  c->dirty = 0;
  if (c->state != S_OPEN || c->blocked || c->owed == 0) return;
  uint64_t len = c->owed;
  if (len > 2 * period - c->off) len = 2 * period - c->off;
  if (o_max_write && len > o_max_write) len = o_max_write;
  ssize_t w = send(c->fd, sendbuf + c->off, len, MSG_NOSIGNAL);
  m_writes++;
  if (w < 0) {
    if (errno == EAGAIN || errno == EINTR) c->blocked = 1;
    else conn_kill(c, "write failed");
    return;
  }
  m_wbytes += (uint64_t)w;
  c->owed -= (uint64_t)w;
  c->off = (c->off + (uint64_t)w) % period;
  /* a short write means the socket buffer is full: wait for the EPOLLOUT edge */
  if ((uint64_t)w < len) c->blocked = 1;
}

/* ---------------------------------------------------------------- fan-out
 *
 * Connection 0 publishes; every other connection is a subscriber. Each publish
 * is a binary message whose first 8 payload bytes are its sequence number
 * (little-endian); its send time, the subscribers it must reach and how many
 * did are kept here, in a ring indexed by sequence number, so the payload needs
 * no timestamp. A publish is complete when every subscriber open at publish
 * time received it; at most --depth are in flight (closed loop), and one older
 * than --fan-timeout is given up as incomplete so that a lost delivery cannot
 * stall the run. Each subscriber must see the sequence numbers rising by one:
 * a repeat or step back is out_of_order, a skip counts the missed ones as gaps.
 *
 * Before measuring, the publisher sends a probe every 100 ms until one probe
 * reached every subscriber: only then has the server subscribed them all
 * (subscriptions are made after the handshake, on the server's own time).
 * Probes still under way after that are below base_seq and ignored.
 */

#define RING (1u << 16)
typedef struct {
  uint64_t seq, t0;
  uint32_t target, count;
  uint8_t live;
} pub_t;
static pub_t ring[RING];
static uint64_t next_seq = 1, oldest_seq = 1, base_seq = 1;
static uint32_t in_flight;
static int settled;
static uint64_t n_frames;    /* prepared frames in sendbuf (different masks) */
static uint8_t *pq;          /* the publisher's frames not yet written */
static size_t pq_off, pq_len, pq_cap;
static uint64_t m_published, m_incomplete, m_late, m_stale, m_to_pub, m_out_of_order, m_gaps;

static int subscribers_open(void) { return n_open - (C[0].state == S_OPEN); }

/* the publisher's one write per iteration: everything queued */
static void flush_publisher(void) {
  conn_t *c = &C[0];
  c->dirty = 0;
  if (c->state != S_OPEN || c->blocked || pq_off == pq_len) return;
  ssize_t w = send(c->fd, pq + pq_off, pq_len - pq_off, MSG_NOSIGNAL);
  m_writes++;
  if (w < 0) {
    if (errno == EAGAIN || errno == EINTR) c->blocked = 1;
    else conn_kill(c, "write failed");
    return;
  }
  m_wbytes += (uint64_t)w;
  pq_off += (size_t)w;
  if (pq_off == pq_len) pq_off = pq_len = 0;
  else c->blocked = 1; /* short write: wait for the EPOLLOUT edge */
  c->owed = pq_len - pq_off;
}

/* queue one publish: a prepared frame with the sequence number masked into its first 8 bytes */
static void publish(uint64_t now) {
  uint64_t seq = next_seq++;
  pub_t *s = &ring[seq % RING];
  if (s->live) { /* the ring came round to a publish still open (only possible far past its deadline) */
    in_flight--;
    if (measuring) m_incomplete++;
  }
  s->seq = seq, s->t0 = now, s->count = 0, s->live = 1;
  s->target = (uint32_t)subscribers_open();
  in_flight++;
  if (pq_len + frame_len > pq_cap) {
    if (pq_off > 0) { /* compact first */
      memmove(pq, pq + pq_off, pq_len - pq_off);
      pq_len -= pq_off, pq_off = 0;
    }
    while (pq_len + frame_len > pq_cap) pq_cap = pq_cap ? 2 * pq_cap : 1u << 16;
    pq = realloc(pq, pq_cap);
  }
  uint8_t *f = pq + pq_len;
  memcpy(f, sendbuf + (seq % n_frames) * frame_len, frame_len);
  uint64_t hl = frame_len - wire_size;
  const uint8_t *mask = f + hl - 4;
  for (int b = 0; b < 8; b++) f[hl + b] = (uint8_t)(seq >> (8 * b)) ^ mask[b & 3];
  pq_len += frame_len;
  C[0].owed = pq_len - pq_off;
  mark_dirty(0);
}

/* one probe reached everyone: every subscription exists, start the closed loop from here */
static void settle(void) {
  settled = 1;
  for (uint64_t q = oldest_seq; q < next_seq; q++) ring[q % RING].live = 0;
  in_flight = 0;
  base_seq = oldest_seq = next_seq;
  for (int i = 1; i < o_conns; i++) C[i].last_seq = base_seq - 1;
}

/* once per loop iteration: give up publishes past their deadline, keep --depth in flight */
static void pump(uint64_t now) {
  uint64_t limit = (uint64_t)(o_fan_timeout * 1e9);
  while (oldest_seq < next_seq) {
    pub_t *s = &ring[oldest_seq % RING];
    if (s->live && s->seq == oldest_seq) {
      if (now - s->t0 < limit) break;
      s->live = 0;
      in_flight--;
      if (measuring) m_incomplete++;
    }
    oldest_seq++;
  }
  if (C[0].state != S_OPEN || subscribers_open() == 0) return;
  while (in_flight < (uint32_t)o_depth) publish(now);
}

/* a whole message arrived on connection i */
static void fan_delivery(int i, uint64_t now) {
  conn_t *c = &C[i];
  c->in_msg = 0;
  if (c->msg_op != 2) m_bad_op++;
  if (c->msg_bytes != o_size) m_bad_len++;
  if (i == 0) { /* the sender is excluded from its own publish */
    m_to_pub++;
    return;
  }
  if (c->msg_bytes < 8) return;
  uint64_t seq = 0;
  for (int b = 7; b >= 0; b--) seq = seq << 8 | c->seqb[b];
  if (seq >= next_seq || seq == 0) {
    m_errors++;
    if (!first_error) first_error = "a message that was never published";
    return;
  }
  if (seq < base_seq) { /* a probe from before the start */
    m_stale++;
    return;
  }
  if (settled) {
    if (seq <= c->last_seq) { /* a repeat or a step back: not a delivery */
      m_out_of_order++;
      return;
    }
    m_gaps += seq - c->last_seq - 1;
    c->last_seq = seq;
  }
  pub_t *s = &ring[seq % RING];
  if (!s->live || s->seq != seq) { /* after its deadline */
    m_late++;
    return;
  }
  if (measuring) {
    m_msgs++;
    hist_add(&lat, now - s->t0);
  }
  if (++s->count < s->target) return;
  if (!settled) {
    settle();
    return;
  }
  s->live = 0;
  in_flight--;
  if (measuring) {
    m_published++;
    hist_add(&lat_last, now - s->t0);
  }
}

static void complete_msg(int i, uint64_t now) {
  conn_t *c = &C[i];
  if (o_fanout) {
    fan_delivery(i, now);
    return;
  }
  c->in_msg = 0;
  int want_op = o_binary ? 2 : 1;
  if (c->msg_op != want_op) m_bad_op++;
  /* with deflate the echo may come back compressed: its size says nothing */
  if (!c->msg_rsv1 && c->msg_bytes != o_size) m_bad_len++;
  if (c->ts_count == 0) { /* an echo nobody asked for */
    m_errors++;
    if (!first_error) first_error = "an echo that was never sent";
    return;
  }
  uint64_t t0 = c->ts[c->ts_head];
  c->ts_head = (c->ts_head + 1) % (uint32_t)o_depth;
  c->ts_count--;
  if (measuring) {
    hist_add(&lat, now - t0);
    m_msgs++;
  }
  if (sending) queue_msgs(i, 1, now);
}

/* header length implied by its first two bytes */
static inline unsigned hdr_need(const uint8_t *h) {
  unsigned l7 = h[1] & 127;
  return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((h[1] & 0x80) ? 4 : 0);
}

static inline uint64_t hdr_len(const uint8_t *h) {
  unsigned l7 = h[1] & 127;
  if (l7 < 126) return l7;
  if (l7 == 126) return (uint64_t)h[2] << 8 | h[3];
  uint64_t v = 0;
  for (int k = 0; k < 8; k++) v = v << 8 | h[2 + k];
  return v;
}

/* a complete frame header: returns 0 on a protocol error */
static int on_header(int i, const uint8_t *h, uint64_t len, uint64_t now) {
  conn_t *c = &C[i];
  int fin = h[0] >> 7, rsv1 = (h[0] >> 6) & 1, op = h[0] & 15;
  c->frame_masked = (h[1] & 0x80) != 0;
  if (c->frame_masked) { /* RFC 6455 §5.1: a server MUST NOT mask; only a reflector is allowed to */
    if (!o_allow_masked) return proto_why = "masked server frame", 0;
    memcpy(c->mask, h + hdr_need(h) - 4, 4);
  }
  c->frame_pos = 0;
  if ((h[0] & 0x30) || (rsv1 && !c->deflate)) return proto_why = "reserved bits set", 0;
  c->frame_fin = (uint8_t)fin;
  if (op >= 8) {
    if (op == 8) return proto_why = "the server sent Close", 0; /* an error in a benchmark */
    m_ctrl++;               /* ping/pong: skipped (an echo server does not send them) */
    c->frame_ctrl = 1;
    c->pay_left = len;
    return 1;
  }
  c->frame_ctrl = 0;
  if (op == 0) {
    if (!c->in_msg) return proto_why = "continuation without a message", 0;
  } else {
    if (c->in_msg) return proto_why = "new message inside a fragmented one", 0;
    c->in_msg = 1;
    c->msg_op = (uint8_t)op;
    c->msg_rsv1 = (uint8_t)rsv1;
    c->msg_bytes = 0;
  }
  c->pay_left = len;
  if (len == 0 && fin) complete_msg(i, now);
  return 1;
}

/* --verify: do these echoed payload bytes match what was sent? (fan-out: after the sequence number) */
static int verify(const conn_t *c, const uint8_t *p, uint64_t n) {
  uint64_t at = c->msg_bytes, fpos = c->frame_pos;
  if (o_fanout && at < 8) {
    uint64_t skip = 8 - at < n ? 8 - at : n;
    p += skip, n -= skip, at += skip, fpos += skip;
  }
  if (at + n > o_size) return 0;
  if (!c->frame_masked) return memcmp(p, plain + at, n) == 0;
  for (uint64_t j = 0; j < n; j++)
    if ((p[j] ^ c->mask[(fpos + j) & 3]) != plain[at + j]) return 0;
  return 1;
}

/* parse server frames in place */
static void on_bytes(int i, const uint8_t *p, size_t n, uint64_t now) {
  conn_t *c = &C[i];
  while (n > 0 && c->state == S_OPEN) {
    if (c->pay_left) {
      uint64_t take = c->pay_left < n ? c->pay_left : n;
      if (!c->frame_ctrl) {
        if (o_fanout && c->msg_bytes < 8) /* the sequence number (server frames are not masked) */
          memcpy(c->seqb + c->msg_bytes, p, 8 - c->msg_bytes < take ? 8 - c->msg_bytes : take);
        if (o_verify && !c->msg_rsv1 && !verify(c, p, take)) m_bad_data++;
        c->msg_bytes += take;
        c->frame_pos += take;
      }
      c->pay_left -= take;
      p += take, n -= take;
      if (c->pay_left == 0 && c->frame_fin && !c->frame_ctrl) complete_msg(i, now);
      continue;
    }
    if (c->hdr_have == 0 && n >= 2) { /* fast path: header whole in the buffer */
      unsigned need = hdr_need(p);
      if (n >= need) {
        if (!on_header(i, p, hdr_len(p), now)) {
          conn_kill(c, proto_why);
          return;
        }
        p += need, n -= need;
        continue;
      }
    }
    /* slow path: the header straddles reads */
    c->hdr[c->hdr_have++] = *p++, n--;
    if (c->hdr_have >= 2 && c->hdr_have == hdr_need(c->hdr)) {
      c->hdr_have = 0;
      if (!on_header(i, c->hdr, hdr_len(c->hdr), now)) {
        conn_kill(c, proto_why);
        return;
      }
    }
  }
}

/* ---------------------------------------------------------------- handshake */

static char request_tail[512];

static void start_conn(int i) {
  conn_t *c = &C[i];
  memset(c, 0, sizeof *c);
  c->ts = calloc((size_t)o_depth, sizeof(uint64_t));
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  n_pending++;
  if (c->fd < 0) {
    perror("loadgen: socket");
    n_pending--;
    c->state = S_DEAD;
    m_hs_fail++;
    m_errors++;
    if (!first_error) first_error = "socket() failed";
    return;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->state = S_CONNECTING;
  if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
    m_hs_fail++;
    conn_kill(c, "connect() failed");
    return;
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u32 = (uint32_t)i};
  epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void hs_fail(conn_t *c, const char *why) {
  static int reported;
  if (reported++ < 3) fprintf(stderr, "loadgen: handshake failed: %s\n", why);
  m_hs_fail++;
  conn_kill(c, "handshake failed");
}

/* value of a header in an HTTP response (case-insensitive name), copied into out */
static int get_header(const char *resp, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  const char *line = strstr(resp, "\r\n");
  while (line && line[2] != '\r') {
    line += 2;
    if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
      const char *v = line + nl + 1;
      while (*v == ' ' || *v == '\t') v++;
      const char *e = strstr(v, "\r\n");
      size_t len = e ? (size_t)(e - v) : strlen(v);
      while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
      if (len >= cap) len = cap - 1;
      memcpy(out, v, len);
      out[len] = 0;
      return 1;
    }
    line = strstr(line, "\r\n");
  }
  return 0;
}

static void send_request(int i) {
  conn_t *c = &C[i];
  uint8_t nonce[16];
  random_bytes(nonce, sizeof nonce);
  base64(nonce, sizeof nonce, c->key);
  char req[1024];
  int len = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     o_path, o_host, o_port, c->key, request_tail);
  /* the request is a few hundred bytes: a fresh socket takes it whole */
  ssize_t w = send(c->fd, req, (size_t)len, MSG_NOSIGNAL);
  if (w != len) {
    hs_fail(c, "short write of the request");
    return;
  }
  c->state = S_HANDSHAKE;
  c->hs = malloc(8192);
  c->hs_len = 0;
}

static void on_handshake_bytes(int i, uint64_t now) {
  conn_t *c = &C[i];
  for (;;) {
    if (c->hs_len >= 8191) {
      hs_fail(c, "response headers too long");
      return;
    }
    ssize_t r = read(c->fd, c->hs + c->hs_len, 8191 - c->hs_len);
    if (r == 0) {
      hs_fail(c, "connection closed during the handshake");
      return;
    }
    if (r < 0) {
      if (errno == EAGAIN) return;
      if (errno == EINTR) continue;
      hs_fail(c, strerror(errno));
      return;
    }
    c->hs_len += (uint32_t)r;
    c->hs[c->hs_len] = 0;
    char *end = strstr(c->hs, "\r\n\r\n");
    if (!end) continue;
    if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0) {
      char line[128];
      snprintf(line, sizeof line, "status %.40s", c->hs);
      char *nl = strchr(line, '\r');
      if (nl) *nl = 0;
      hs_fail(c, line);
      return;
    }
    /* RFC 6455 §4.2.2: accept = base64(sha1(key + GUID)) */
    char src[128], want[64], got[128], ext[256];
    uint8_t dig[20];
    snprintf(src, sizeof src, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", c->key);
    sha1((const uint8_t *)src, strlen(src), dig);
    base64(dig, 20, want);
    if (!get_header(c->hs, "sec-websocket-accept", got, sizeof got) || strcmp(got, want) != 0) {
      hs_fail(c, "bad Sec-WebSocket-Accept");
      return;
    }
    c->deflate = (uint8_t)(get_header(c->hs, "sec-websocket-extensions", ext, sizeof ext) &&
                           strstr(ext, "permessage-deflate") != NULL);
    if (c->deflate && !o_deflate) {
      hs_fail(c, "the server accepted an extension that was not offered");
      return;
    }
    size_t head = (size_t)(end + 4 - c->hs), extra = c->hs_len - head;
    uint8_t leftover[8192];
    memcpy(leftover, c->hs + head, extra);
    free(c->hs);
    c->hs = NULL;
    c->state = S_OPEN;
    n_pending--;
    n_open++;
    n_hs_done++;
    if (extra) on_bytes(i, leftover, extra, now);
    return;
  }
}

/* ---------------------------------------------------------------- event handling */

static void on_event(int i, uint32_t ev, uint64_t now) {
  conn_t *c = &C[i];
  if (c->state == S_DEAD) return;
  if (c->state == S_CONNECTING) {
    if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
      hs_fail(c, strerror(err));
      return;
    }
    send_request(i);
    return; /* the response triggers its own EPOLLIN edge */
  }
  if (c->state == S_HANDSHAKE) {
    if (!(ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) return;
    on_handshake_bytes(i, now);
    if (c->state != S_OPEN) return;
    if (sending && !o_fanout) queue_msgs(i, o_depth, now);
    /* bytes may still wait behind the response: drain them below, the edge will not come again */
    ev |= EPOLLIN | EPOLLRDHUP;
  }
  /* open */
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    int hup = (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    for (;;) {
      ssize_t r = read(c->fd, rbuf, RBUF_SIZE);
      m_reads++;
      if (r > 0) {
        m_rbytes += (uint64_t)r;
        on_bytes(i, rbuf, (size_t)r, now);
        if (c->state != S_OPEN) return;
        /* edge-triggered: a short read drained the socket; anything arriving later raises a new edge */
        if ((size_t)r < RBUF_SIZE && !hup) break;
        continue;
      }
      if (r == 0) {
        conn_kill(c, "the server closed the connection"); /* under load */
        return;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN) conn_kill(c, "read failed");
      break;
    }
  }
  if (c->state == S_OPEN && (ev & EPOLLOUT)) {
    c->blocked = 0;
    if (c->owed) mark_dirty(i);
  }
}

static void flush_dirty(void) {
  for (int k = 0; k < n_dirty; k++) flush(dirty[k]);
  n_dirty = 0;
}

/* ---------------------------------------------------------------- payload */

static void build_frames(void) {
  plain = malloc(o_size ? o_size : 1);
  if (o_binary && !o_deflate) {
    uint64_t x = 0x9E3779B97F4A7C15ull; /* xorshift: incompressible bytes */
    for (uint64_t k = 0; k < o_size; k++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      plain[k] = (uint8_t)x;
    }
  } else { /* printable ASCII (valid UTF-8), compressible like real text */
    static const char words[] = "the quick brown fox jumps over the lazy websock benchmark 0123456789 ";
    for (uint64_t k = 0; k < o_size; k++) plain[k] = (uint8_t)words[k % (sizeof words - 1)];
  }
  uint8_t *payload = plain;
  wire_size = o_size;
  if (deflate_on) {
    /* RFC 7692 §7.2.1: raw deflate, sync flush, drop the trailing 00 00 ff ff */
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) exit(2);
    uLong cap = deflateBound(&z, (uLong)o_size) + 16;
    payload = malloc(cap);
    z.next_in = plain, z.avail_in = (uInt)o_size, z.next_out = payload, z.avail_out = (uInt)cap;
    if (deflate(&z, Z_SYNC_FLUSH) != Z_OK) exit(2);
    wire_size = cap - z.avail_out;
    if (wire_size >= 4 && memcmp(payload + wire_size - 4, "\x00\x00\xff\xff", 4) == 0) wire_size -= 4;
    deflateEnd(&z);
  }
  unsigned hl = 2 + (wire_size < 126 ? 0 : wire_size < 65536 ? 2 : 8) + 4;
  frame_len = hl + wire_size;
  uint64_t k = (uint64_t)o_depth;
  if (o_fanout && k < 64) k = 64; /* every publish is one frame: rotate through 64 keys */
  uint64_t cap_frames = (32ull << 20) / frame_len;
  if (cap_frames < 1) cap_frames = 1;
  if (k > cap_frames) k = cap_frames;
  period = k * frame_len;
  n_frames = k;
  sendbuf = malloc(2 * period);
  for (uint64_t f = 0; f < k; f++) {
    uint8_t *h = sendbuf + f * frame_len;
    h[0] = (uint8_t)(0x80 | (deflate_on ? 0x40 : 0) | (o_binary ? 2 : 1));
    unsigned p = 2;
    if (wire_size < 126) h[1] = (uint8_t)(0x80 | wire_size);
    else if (wire_size < 65536) {
      h[1] = 0x80 | 126;
      h[2] = (uint8_t)(wire_size >> 8), h[3] = (uint8_t)wire_size;
      p = 4;
    } else {
      h[1] = 0x80 | 127;
      for (int b = 0; b < 8; b++) h[2 + b] = (uint8_t)(wire_size >> (56 - 8 * b));
      p = 10;
    }
    uint8_t mask[4];
    do random_bytes(mask, 4);
    while (!(mask[0] | mask[1] | mask[2] | mask[3])); /* RFC 6455 §5.3: a fresh, unpredictable key */
    memcpy(h + p, mask, 4);
    p += 4;
    for (uint64_t b = 0; b < wire_size; b++) h[p + b] = payload[b] ^ mask[b & 3];
  }
  memcpy(sendbuf + period, sendbuf, period);
  if (payload != plain) free(payload);
}

/* every open connection must agree on deflate (one set of prepared frames); then prepare them */
static int prepare(void) {
  int n_deflate = 0;
  for (int i = 0; i < o_conns; i++) n_deflate += C[i].state == S_OPEN && C[i].deflate;
  if (n_deflate != 0 && n_deflate != n_open) {
    fprintf(stderr, "loadgen: permessage-deflate accepted on %d of %d connections\n", n_deflate, n_open);
    return 0;
  }
  deflate_on = n_deflate > 0;
  if (o_verify && deflate_on) fprintf(stderr, "loadgen: --verify skips compressed echoes\n");
  build_frames();
  return 1;
}

/* ---------------------------------------------------------------- main */

static double arg_num(const char *s, const char *name) {
  char *e;
  double v = strtod(s, &e);
  if (*e || v < 0) {
    fprintf(stderr, "loadgen: bad value for %s: %s\n", name, s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV                                                                                                          \
  if (!v) {                                                                                                            \
    fprintf(stderr, "loadgen: %s needs a value\n", a);                                                                 \
    return 2;                                                                                                          \
  }                                                                                                                    \
  i++
    if (!strcmp(a, "--host")) { NEEDV; o_host = v; }
    else if (!strcmp(a, "--port")) { NEEDV; o_port = (int)arg_num(v, a); }
    else if (!strcmp(a, "--path")) { NEEDV; o_path = v; }
    else if (!strcmp(a, "--conns")) { NEEDV; o_conns = (int)arg_num(v, a); }
    else if (!strcmp(a, "--size")) { NEEDV; o_size = (uint64_t)arg_num(v, a); }
    else if (!strcmp(a, "--depth")) { NEEDV; o_depth = (int)arg_num(v, a); }
    else if (!strcmp(a, "--seconds")) { NEEDV; o_seconds = arg_num(v, a); }
    else if (!strcmp(a, "--warmup")) { NEEDV; o_warmup = arg_num(v, a); }
    else if (!strcmp(a, "--pid")) { NEEDV; o_pid = (int)arg_num(v, a); }
    else if (!strcmp(a, "--hold")) { NEEDV; o_hold = arg_num(v, a); }
    else if (!strcmp(a, "--open-par")) { NEEDV; o_open_par = (int)arg_num(v, a); }
    else if (!strcmp(a, "--timeout")) { NEEDV; o_timeout = arg_num(v, a); }
    else if (!strcmp(a, "--text")) o_binary = 0;
    else if (!strcmp(a, "--binary")) o_binary = 1;
    else if (!strcmp(a, "--idle")) o_idle = 1;
    else if (!strcmp(a, "--deflate")) o_deflate = 1;
    else if (!strcmp(a, "--verify")) o_verify = 1;
    else if (!strcmp(a, "--echo-once")) o_echo_once = 1;
    else if (!strcmp(a, "--deflate-offer")) { NEEDV; o_deflate_offer = v; }
    else if (!strcmp(a, "--allow-masked")) o_allow_masked = 1;
    else if (!strcmp(a, "--fanout")) o_fanout = 1;
    else if (!strcmp(a, "--fan-timeout")) { NEEDV; o_fan_timeout = arg_num(v, a); }
    else if (!strcmp(a, "--max-write")) { NEEDV; o_max_write = (uint64_t)arg_num(v, a); }
    else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(); return 0; }
    else { fprintf(stderr, "loadgen: unknown option %s\n", a); usage(); return 2; }
  }
  if (o_port <= 0 || o_conns < 1 || o_depth < 1 || o_open_par < 1) {
    usage();
    return 2;
  }
  if (o_fanout && (o_conns < 2 || o_size < 8 || o_depth > (int)(RING / 4) || o_deflate || o_idle || o_allow_masked)) {
    fprintf(stderr, "loadgen: --fanout needs --conns >= 2 (a publisher and subscribers), --size >= 8, --depth <= %u,\n"
                    "         and no --deflate, --idle or --allow-masked\n", RING / 4);
    return 2;
  }
  if (o_fanout) o_binary = 1; /* a sequence number is not UTF-8 */
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)o_port);
  if (inet_pton(AF_INET, o_host, &addr.sin_addr) != 1 || (ntohl(addr.sin_addr.s_addr) >> 24) != 127) {
    fprintf(stderr, "loadgen: --host must be a loopback IPv4 address (127.x.x.x)\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)o_conns + 16)
    fprintf(stderr, "loadgen: warning: fd limit %llu is below --conns %d\n", (unsigned long long)rl.rlim_cur, o_conns);
  if (o_deflate)
    snprintf(request_tail, sizeof request_tail,
             "Sec-WebSocket-Extensions: permessage-deflate%s%s\r\n", *o_deflate_offer ? "; " : "", o_deflate_offer);

  C = calloc((size_t)o_conns, sizeof(conn_t));
  dirty = calloc((size_t)o_conns, sizeof(int));
  rbuf = malloc(RBUF_SIZE);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event evs[1024];

  long rss0 = o_pid ? proc_rss_kib(o_pid) : -1;
  if (o_pid && rss0 < 0) fprintf(stderr, "loadgen: warning: cannot read /proc/%d\n", o_pid);

  /* phase 1: connect and handshake, at most --open-par at once, bounded by --timeout */
  uint64_t t0 = now_ns(), hs_deadline = t0 + (uint64_t)(o_timeout * 1e9);
  int next = 0;
  while (next < o_conns || n_pending > 0) {
    while (next < o_conns && n_pending < o_open_par) start_conn(next++);
    uint64_t now = now_ns();
    if (now >= hs_deadline) {
      for (int i = 0; i < next; i++)
        if (C[i].state == S_CONNECTING || C[i].state == S_HANDSHAKE) hs_fail(&C[i], "timeout");
      m_hs_fail += (uint64_t)(o_conns - next);
      break;
    }
    int n = epoll_wait(epfd, evs, 1024, 100);
    now = now_ns();
    for (int k = 0; k < n; k++) on_event((int)evs[k].data.u32, evs[k].events, now);
  }
  double hs_secs = (double)(now_ns() - t0) / 1e9;
  int opened = n_open;

  if (o_idle) {
    uint64_t echoed = 0;
    if (o_echo_once && n_open > 0) { /* one message each, then idle: bounded by --timeout */
      if (!prepare()) return 1;
      measuring = 1;
      uint64_t now = now_ns(), deadline = now + (uint64_t)(o_timeout * 1e9);
      for (int i = 0; i < o_conns; i++)
        if (C[i].state == S_OPEN) queue_msgs(i, 1, now);
      flush_dirty();
      while (m_msgs < (uint64_t)n_open && now < deadline) {
        int n = epoll_wait(epfd, evs, 1024, 100);
        now = now_ns();
        for (int k = 0; k < n; k++) on_event((int)evs[k].data.u32, evs[k].events, now);
        flush_dirty();
      }
      measuring = 0;
      echoed = m_msgs;
    }
    int negotiated = 0;
    for (int i = 0; i < o_conns; i++) negotiated |= C[i].state == S_OPEN && C[i].deflate;
    long rss1 = o_pid ? proc_rss_kib(o_pid) : -1;
    uint64_t end = now_ns() + (uint64_t)(o_hold * 1e9);
    for (;;) { /* hold: bounded by --hold */
      uint64_t now = now_ns();
      if (now >= end) break;
      int to = (int)((end - now) / 1000000) + 1;
      int n = epoll_wait(epfd, evs, 1024, to > 100 ? 100 : to);
      now = now_ns();
      for (int k = 0; k < n; k++) {
        conn_t *c = &C[evs[k].data.u32];
        if (c->state != S_OPEN) continue;
        if (evs[k].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) conn_kill(c, "the server closed an idle connection");
        else {
          ssize_t r; /* an idle echo server sends nothing; drain whatever comes */
          while ((r = read(c->fd, rbuf, RBUF_SIZE)) > 0) m_ctrl++;
          if (r == 0) conn_kill(c, "the server closed an idle connection");
        }
      }
    }
    long rss2 = o_pid ? proc_rss_kib(o_pid) : -1;
    printf("{\"mode\":\"idle\",\"conns\":%d,\"opened\":%d,\"open\":%d,\"handshake_s\":%.3f,\"hold_s\":%g,"
           "\"errors\":%llu,\"hs_fail\":%llu,\"deflate\":%s,\"echoed\":%llu",
           o_conns, opened, n_open, hs_secs, o_hold, (unsigned long long)m_errors, (unsigned long long)m_hs_fail,
           negotiated ? "true" : "false", (unsigned long long)echoed);
    if (o_pid)
      printf(",\"pid\":%d,\"rss_before_kib\":%ld,\"rss_open_kib\":%ld,\"rss_end_kib\":%ld,"
             "\"kib_per_conn_open\":%.3f,\"kib_per_conn\":%.3f",
             o_pid, rss0, rss1, rss2, opened ? (double)(rss1 - rss0) / opened : 0.0,
             n_open ? (double)(rss2 - rss0) / n_open : 0.0);
    if (first_error) printf(",\"first_error\":\"%s\"", first_error);
    printf("}\n");
    for (int i = 0; i < o_conns; i++) conn_kill(&C[i], NULL);
    return n_open == o_conns ? 0 : 1;
  }

  if (n_open == 0) {
    fprintf(stderr, "loadgen: no connection could be opened\n");
    printf("{\"mode\":\"load\",\"conns\":%d,\"opened\":0,\"errors\":%llu,\"hs_fail\":%llu}\n", o_conns,
           (unsigned long long)m_errors, (unsigned long long)m_hs_fail);
    return 1;
  }

  if (!prepare()) return 1;

  uint64_t now = now_ns();
  double settle_secs = 0;
  if (o_fanout) { /* a probe every 100 ms until one reached every subscriber, bounded by --timeout */
    uint64_t deadline = now + (uint64_t)(o_timeout * 1e9), last_probe = 0, t_settle = now;
    while (!settled && now < deadline && C[0].state == S_OPEN && subscribers_open() > 0) {
      if (last_probe == 0 || now - last_probe >= 100000000ull) {
        publish(now);
        last_probe = now;
      }
      flush_dirty();
      int n = epoll_wait(epfd, evs, 1024, 10);
      now = now_ns();
      for (int k = 0; k < n; k++) on_event((int)evs[k].data.u32, evs[k].events, now);
    }
    settle_secs = (double)(now - t_settle) / 1e9;
    if (!settled) {
      fprintf(stderr, "loadgen: no probe reached all %d subscribers within --timeout\n", subscribers_open());
      printf("{\"mode\":\"fanout\",\"conns\":%d,\"opened\":%d,\"open\":%d,\"settled\":false,\"errors\":%llu,"
             "\"hs_fail\":%llu,\"first_error\":\"%s\"}\n",
             o_conns, opened, n_open, (unsigned long long)m_errors + 1, (unsigned long long)m_hs_fail,
             first_error ? first_error : "the server did not forward a probe to every subscriber");
      return 1;
    }
  }

  /* phase 2: warm up, then measure; the loop is bounded by the clock */
  sending = 1;
  if (o_fanout) pump(now);
  else
    for (int i = 0; i < o_conns; i++)
      if (C[i].state == S_OPEN) queue_msgs(i, o_depth, now);
  flush_dirty();
  uint64_t t_meas = now + (uint64_t)(o_warmup * 1e9), t_end = 0;
  uint64_t cpu_user0 = 0, cpu_sys0 = 0;
  long long cpu_srv0 = -1;
  cores_t k0, k1;
  for (;;) {
    if (!measuring && now >= t_meas) {
      measuring = 1;
      memset(&lat, 0, sizeof lat);
      memset(&lat_last, 0, sizeof lat_last);
      m_bad_data = 0;
      m_msgs = m_errors = m_bad_len = m_bad_op = m_ctrl = m_closed = m_reads = m_writes = m_rbytes = m_wbytes = 0;
      m_published = m_incomplete = m_late = m_stale = m_to_pub = m_out_of_order = m_gaps = 0;
      self_cpu_us(&cpu_user0, &cpu_sys0);
      cpu_srv0 = o_pid ? proc_cpu_ticks(o_pid) : -1;
      read_cores(&k0);
      t_meas = now;
      t_end = now + (uint64_t)(o_seconds * 1e9);
    }
    if (measuring && now >= t_end) break;
    if (n_open == 0) break;
    uint64_t target = measuring ? t_end : t_meas;
    int to = (int)((target - now) / 1000000) + 1;
    int n = epoll_wait(epfd, evs, 1024, to > 100 ? 100 : to);
    now = now_ns();
    for (int k = 0; k < n; k++) on_event((int)evs[k].data.u32, evs[k].events, now);
    if (o_fanout) pump(now);
    flush_dirty();
  }
  now = now_ns();
  double secs = measuring ? (double)(now - t_meas) / 1e9 : 0;
  double cpu_self = -1, cpu_user = -1, cpu_srv = -1, cpu_other = -1;
  double tck = (double)sysconf(_SC_CLK_TCK);
  long long cpu_srv1 = -1;
  if (measuring && secs > 0) {
    uint64_t u1, s1;
    self_cpu_us(&u1, &s1);
    cpu_user = 100.0 * (double)(u1 - cpu_user0) / 1e6 / secs;
    cpu_self = cpu_user + 100.0 * (double)(s1 - cpu_sys0) / 1e6 / secs;
    cpu_srv1 = o_pid ? proc_cpu_ticks(o_pid) : -1;
    if (cpu_srv0 >= 0 && cpu_srv1 >= 0) cpu_srv = 100.0 * (double)(cpu_srv1 - cpu_srv0) / tck / secs;
  }
  read_cores(&k1);
  long rss_end = o_pid ? proc_rss_kib(o_pid) : -1;

  printf("{\"mode\":\"%s\",\"conns\":%d,\"opened\":%d,\"open\":%d,\"size\":%llu,\"type\":\"%s\",\"depth\":%d,"
         "\"deflate\":%s,\"wire_size\":%llu,\"seconds\":%.3f,\"msgs\":%llu,\"msgs_per_s\":%.1f,\"mb_per_s\":%.3f,"
         "\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f,"
         "\"errors\":%llu,\"hs_fail\":%llu,\"bad_len\":%llu,\"bad_op\":%llu,\"bad_data\":%llu,\"ctrl_frames\":%llu,\"closed\":%llu,"
         "\"reads_per_s\":%.1f,\"writes_per_s\":%.1f,\"cpu_loadgen_pct\":%.1f,\"cpu_loadgen_user_pct\":%.1f",
         o_fanout ? "fanout" : "load", o_conns, opened, n_open, (unsigned long long)o_size, o_binary ? "binary" : "text", o_depth,
         deflate_on ? "true" : "false", (unsigned long long)wire_size, secs, (unsigned long long)m_msgs,
         secs > 0 ? (double)m_msgs / secs : 0.0, secs > 0 ? (double)m_msgs * (double)o_size / secs / 1e6 : 0.0,
         hist_pct(&lat, 0.50) / 1e3, hist_pct(&lat, 0.99) / 1e3, hist_pct(&lat, 0.999) / 1e3, (double)lat.max / 1e3,
         (unsigned long long)m_errors, (unsigned long long)m_hs_fail, (unsigned long long)m_bad_len,
         (unsigned long long)m_bad_op, (unsigned long long)m_bad_data, (unsigned long long)m_ctrl, (unsigned long long)m_closed,
         secs > 0 ? (double)m_reads / secs : 0.0, secs > 0 ? (double)m_writes / secs : 0.0, cpu_self, cpu_user);
  if (o_fanout)
    printf(",\"subscribers\":%d,\"deliveries_per_s\":%.1f,\"publishes_per_s\":%.1f,\"published\":%llu,"
           "\"incomplete\":%llu,\"in_flight_end\":%u,\"late\":%llu,\"stale\":%llu,\"to_publisher\":%llu,"
           "\"out_of_order\":%llu,\"gaps\":%llu,\"last_p50_us\":%.2f,\"last_p99_us\":%.2f,\"last_p999_us\":%.2f,"
           "\"last_max_us\":%.2f,\"handshake_s\":%.3f,\"settle_s\":%.3f",
           o_conns - 1, secs > 0 ? (double)m_msgs / secs : 0.0, secs > 0 ? (double)m_published / secs : 0.0,
           (unsigned long long)m_published, (unsigned long long)m_incomplete, in_flight, (unsigned long long)m_late,
           (unsigned long long)m_stale, (unsigned long long)m_to_pub, (unsigned long long)m_out_of_order,
           (unsigned long long)m_gaps, hist_pct(&lat_last, 0.50) / 1e3, hist_pct(&lat_last, 0.99) / 1e3,
           hist_pct(&lat_last, 0.999) / 1e3, (double)lat_last.max / 1e3, hs_secs, settle_secs);
  if (o_pid)
    printf(",\"pid\":%d,\"cpu_server_pct\":%.1f,\"rss_before_kib\":%ld,\"rss_end_kib\":%ld", o_pid, cpu_srv, rss0,
           rss_end);
  if (k0.n > 0 && k1.n == k0.n && secs > 0) {
    double busy_all = 0;
    printf(",\"core_busy_pct\":[");
    for (int c = 0; c < k0.n; c++) {
      unsigned long long dt = k1.total[c] - k0.total[c], db = k1.busy[c] - k0.busy[c];
      busy_all += (double)db;
      printf("%s%.1f", c ? "," : "", dt ? 100.0 * (double)db / (double)dt : 0.0);
    }
    printf("]");
    /* everything busy on the machine that was neither us nor the server: noise from other work */
    if (cpu_self >= 0 && (!o_pid || cpu_srv >= 0)) {
      cpu_other = 100.0 * busy_all / tck / secs - cpu_self - (o_pid ? cpu_srv : 0);
      printf(",\"cpu_other_pct\":%.1f", cpu_other < 0 ? 0.0 : cpu_other);
    }
  }
  if (first_error) printf(",\"first_error\":\"%s\"", first_error);
  printf("}\n");
  fflush(stdout);
  for (int i = 0; i < o_conns; i++) conn_kill(&C[i], NULL);
  return m_msgs > 0 ? 0 : 1;
}
