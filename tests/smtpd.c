/*
 * tests/smtpd.c - qkit's scripted test SMTP server (documented in
 * tests/smtpd.md: options, script language, record format).
 *
 * Owns: loopback listeners, one thread per accepted connection, the SMTP
 * server state machine (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, VRFY,
 * QUIT, STARTTLS with OpenSSL), the script (what to do per connection and
 * per command), the record file and the counters.  It is a test peer, not
 * a mail server: messages go nowhere unless -d stores them.
 *
 * Invariants:
 *  - The main thread only accepts and handles signals/idle time; each
 *    connection thread owns its struct conn and never touches another.
 *    Shared: the read-only script and options, the SSL_CTX, atomic
 *    counters, the record fd (O_APPEND, one write() per batch of lines,
 *    so lines of different connections never interleave), and the list
 *    of live connections (a mutex), through which the exit shuts their
 *    sockets down and waits for their threads.
 *  - The record lines of a batch are written before the replies of that
 *    batch go out: whatever a client has seen is already in the record.
 *  - Memory per connection is bounded: command lines longer than MAX_LINE
 *    are discarded, message data beyond MSG_CAP is counted but not kept,
 *    pending replies are flushed past OUT_CAP, recipients past MAX_RCPT
 *    are refused.  Nothing a client sends makes the server exit.
 *  - Replies are queued and sent in one write when the server would wait
 *    for input (RFC 2920 server behaviour); the "group" counter recorded
 *    with each command counts those waits, so commands with the same group
 *    were pipelined.
 *
 * Weak spots, said plainly: a thread per connection (fine for the few
 * hundred connections tests and benchmarks open, not for 10k at once);
 * "body N" fires after the read that crossed N bytes, not at byte N;
 * the record file is not fsync'd.
 *
 * Diagnostics: usage and script errors on stderr (exit 2), fatal start-up
 * errors (bind, certificate) exit 1; per-connection problems go to the
 * record, never to stderr.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define MAX_LINE 4096			/* longest command line kept */
#define IN_INIT (64 * 1024)		/* initial input buffer */
#define MSG_CAP (64L * 1024 * 1024)	/* message bytes kept in memory */
#define OUT_CAP (1024 * 1024)		/* pending replies flushed past this */
#define MAX_RCPT 1000			/* recipients per transaction */
#define MAX_EXT 64			/* EHLO keywords */
#define MAX_LISTEN 16
#define REC_CMD_MAX 1000		/* bytes of a command shown in the record */
#define REC_REPLY_MAX 300		/* bytes of a reply shown in the record */
#define DEFAULT_SIZE 52428800L

/* ---- small utilities ---------------------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
};

static void die_nomem(void)
{
	static const char m[] = "smtpd: out of memory\n";

	if (write(2, m, sizeof m - 1) < 0) {
		/* nothing more to do */
	}
	_exit(3);
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (p == NULL)
		die_nomem();
	return p;
}

static char *xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);

	if (p == NULL)
		die_nomem();
	return p;
}

static void buf_need(struct buf *b, size_t more)
{
	size_t cap = b->cap ? b->cap : 256;

	if (b->len + more + 1 <= b->cap)
		return;
	while (cap < b->len + more + 1)
		cap *= 2;
	b->p = xrealloc(b->p, cap);
	b->cap = cap;
}

static void buf_add(struct buf *b, const void *p, size_t n)
{
	buf_need(b, n);
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void buf_addf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void buf_addf(struct buf *b, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof small) {
		buf_add(b, small, (size_t)n);
		return;
	}
	buf_need(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

static void buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

/* Append p[0..n) escaped for one record line: printable ASCII except '\'
 * as is, \\ \r \n \t, else \xHH; at most max input bytes, then "...[+N]". */
static void buf_addesc(struct buf *b, const char *p, size_t n, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	size_t lim = n < max ? n : max;

	buf_need(b, lim * 4 + 32);
	for (size_t i = 0; i < lim; i++) {
		unsigned char ch = (unsigned char)p[i];
		char *o = b->p + b->len;

		if (ch == '\\') {
			o[0] = '\\', o[1] = '\\', b->len += 2;
		} else if (ch == '\r') {
			o[0] = '\\', o[1] = 'r', b->len += 2;
		} else if (ch == '\n') {
			o[0] = '\\', o[1] = 'n', b->len += 2;
		} else if (ch == '\t') {
			o[0] = '\\', o[1] = 't', b->len += 2;
		} else if (ch < 0x20 || ch >= 0x7f) {
			o[0] = '\\', o[1] = 'x', o[2] = hex[ch >> 4];
			o[3] = hex[ch & 15], b->len += 4;
		} else {
			o[0] = (char)ch, b->len += 1;
		}
	}
	b->p[b->len] = '\0';
	if (lim < n)
		buf_addf(b, "...[+%zu]", n - lim);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static atomic_int quitting;	/* the server is exiting */

/* Sleep ms milliseconds, in slices, ending early when the server exits. */
static void msleep(long ms)
{
	while (ms > 0 && !atomic_load_explicit(&quitting, memory_order_relaxed)) {
		long slice = ms > 50 ? 50 : ms;
		struct timespec ts = { 0, slice * 1000000L };

		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		ms -= slice;
	}
}

/* Case-insensitive: does p[0..n) start with word w (followed by end,
 * space or, when colon is set, anything)? */
static int word_is(const char *p, size_t n, const char *w)
{
	size_t wl = strlen(w);

	if (n < wl || strncasecmp(p, w, wl) != 0)
		return 0;
	return n == wl || p[wl] == ' ' || p[wl] == '\t';
}

/* ---- options and global state --------------------------------------------- */

struct listener {
	char host[INET6_ADDRSTRLEN];	/* as given, no brackets */
	int family;
	int port_given;			/* -1: the shared port (-p) */
	int port;			/* bound port */
	int refuse;			/* bound, never listening */
	long max;			/* stop listening after this many */
	long accepted;
	int fd;
};

static struct {
	const char *script, *record, *datadir, *cert, *key, *hostname;
	int port, idle, tls_max, want_cert, brief;
} opt = { .hostname = "mx.test", .idle = 60, .tls_max = TLS1_3_VERSION };

static struct listener listeners[MAX_LISTEN];
static int n_listeners;

static SSL_CTX *ssl_ctx;
static EVP_MD *md_sha256;
static int rec_fd = -1;
static int64_t t_start;
static atomic_long st_conns, st_msgs, st_rcpts, st_tls, st_resumed;
static atomic_long last_activity;	/* now_ms() of the last accept/read */
static atomic_int live_threads;

static void touch(void)
{
	atomic_store_explicit(&last_activity, (long)now_ms(),
		memory_order_relaxed);
}

static long t_rel(void)
{
	return (long)(now_ms() - t_start);
}

/* Server-wide record line (main thread, start-up and exit). */
static void rec_global(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void rec_global(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	if (rec_fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	if (write(rec_fd, line, (size_t)n) < 0) {
		/* the record is best effort once started */
	}
}

/* ---- the script ------------------------------------------------------------- */

enum pt {
	P_BANNER, P_EHLO, P_HELO, P_MAIL, P_RCPT, P_DATA, P_BODY, P_DOT,
	P_RSET, P_QUIT, P_STARTTLS, P_TLS, P_NOOP, P_VRFY, P_OTHER, P_N
};

static const char *const pt_name[P_N] = {
	"banner", "ehlo", "helo", "mail", "rcpt", "data", "body", "dot",
	"rset", "quit", "starttls", "tls", "noop", "vrfy", "other",
};

enum sk {
	S_REPLY, S_RAW, S_DEFAULT, S_DELAY, S_TRICKLE, S_HOLD, S_FLUSH,
	S_NOREPLY, S_BIG, S_LONGLINE,
	/* terminal steps: the connection ends (or hangs) here */
	S_CLOSE, S_DROP, S_RST, S_STALL, S_FREEZE, S_ENDLESS,
};

struct step {
	enum sk kind;
	long n;			/* delay/trickle ms, big/longline bytes */
	int code;		/* reply code (0: not 3 digits) */
	char *data;		/* reply/raw bytes, wire-ready */
	size_t len;
};

struct rule {
	enum pt pt;
	long n;			/* rcpt: index in transaction; body: bytes */
	long occ;		/* #K: K-th occurrence on the connection */
	struct step *steps;
	size_t nsteps;
};

struct section {
	long (*ranges)[2];	/* connection numbers lo..hi (hi<0: open) */
	size_t nranges;
	int is_default;
	int listener;		/* 1-based; 0 = any */
	struct rule *rules;
	size_t nrules;
	char *ext[MAX_EXT];
	int n_ext;
	int ext_set;
	int sync_reject;	/* -1 inherit, 0 record, 1 reject */
};

static struct section base = { .sync_reject = 0 };
static struct section *sections;
static size_t n_sections;

static int is_terminal(enum sk k)
{
	return k >= S_CLOSE;
}

static void script_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));

static void script_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "smtpd: %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

/* Unescape s[0..n) into *out: \r \n \t \\ \; \xHH \0; else literal. */
static int unescape(const char *s, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (ch != '\\') {
			buf_add(out, &ch, 1);
			continue;
		}
		if (++i == n)
			return -1;
		switch (s[i]) {
		case 'r': ch = '\r'; break;
		case 'n': ch = '\n'; break;
		case 't': ch = '\t'; break;
		case '0': ch = '\0'; break;
		case '\\': ch = '\\'; break;
		case ';': ch = ';'; break;
		case 'x': {
			char h[3] = { 0, 0, 0 };
			char *end;

			if (i + 2 >= n)
				return -1;
			h[0] = s[i + 1], h[1] = s[i + 2];
			ch = (char)strtol(h, &end, 16);
			if (end != h + 2)
				return -1;
			i += 2;
			break;
		}
		default:
			return -1;
		}
		buf_add(out, &ch, 1);
	}
	return 0;
}

static int reply_code(const char *p, size_t n)
{
	if (n >= 3 && isdigit((unsigned char)p[0]) &&
	    isdigit((unsigned char)p[1]) && isdigit((unsigned char)p[2]) &&
	    (n == 3 || !isdigit((unsigned char)p[3])))
		return (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
	return 0;
}

static long parse_num(const char *s, const char *file, int line)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end != '\0' || v < 0)
		script_fail(file, line, "bad number '%s'", s);
	return v;
}

/* Split words of s (modified in place) into w[]; returns the count. */
static int split_words(char *s, char **w, int max)
{
	int n = 0;

	while (*s && n < max) {
		while (*s == ' ' || *s == '\t')
			s++;
		if (!*s)
			break;
		w[n++] = s;
		while (*s && *s != ' ' && *s != '\t')
			s++;
		if (*s)
			*s++ = '\0';
	}
	return n;
}

static void parse_step(struct step *st, char *s, const char *file, int line)
{
	static const struct { const char *name; enum sk kind; } kw[] = {
		{ "reply", S_REPLY }, { "raw", S_RAW },
		{ "default", S_DEFAULT }, { "delay", S_DELAY },
		{ "trickle", S_TRICKLE }, { "hold", S_HOLD },
		{ "flush", S_FLUSH }, { "noreply", S_NOREPLY },
		{ "big", S_BIG }, { "longline", S_LONGLINE },
		{ "close", S_CLOSE }, { "drop", S_DROP }, { "rst", S_RST },
		{ "stall", S_STALL }, { "freeze", S_FREEZE },
		{ "endless", S_ENDLESS },
	};
	size_t wl = strcspn(s, " \t");
	char *arg = s + wl;
	struct buf b = { 0 };
	int found = -1;

	while (*arg == ' ' || *arg == '\t')
		arg++;
	for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++)
		if (strlen(kw[i].name) == wl &&
		    strncasecmp(s, kw[i].name, wl) == 0)
			found = (int)i;
	memset(st, 0, sizeof *st);
	if (found < 0) {	/* a bare reply */
		st->kind = S_REPLY;
		arg = s;
	} else {
		st->kind = kw[found].kind;
	}
	switch (st->kind) {
	case S_REPLY:
	case S_RAW:
		if (unescape(arg, strlen(arg), &b) < 0)
			script_fail(file, line, "bad escape in '%s'", arg);
		if (st->kind == S_REPLY) {
			struct buf w = { 0 };

			if (b.len == 0)
				script_fail(file, line, "empty reply");
			st->code = reply_code(b.p, b.len);
			for (size_t i = 0; i < b.len; i++) {
				if (b.p[i] == '\n')
					buf_add(&w, "\r\n", 2);
				else
					buf_add(&w, b.p + i, 1);
			}
			buf_add(&w, "\r\n", 2);
			buf_free(&b);
			b = w;
		} else if (b.len == 0) {
			script_fail(file, line, "raw needs bytes");
		}
		st->data = b.p;
		st->len = b.len;
		break;
	case S_DELAY:
	case S_TRICKLE:
	case S_BIG:
	case S_LONGLINE:
	case S_ENDLESS: {
		char *w[3];
		int nw = split_words(arg, w, 3);

		if (nw == 0 && st->kind != S_ENDLESS)
			script_fail(file, line, "%s needs a number", kw[found].name);
		st->n = nw > 0 ? parse_num(w[0], file, line) :
			(st->kind == S_ENDLESS ? 10 : 0);
		st->code = 250;
		if (nw > 1) {
			if (st->kind == S_DELAY || st->kind == S_TRICKLE)
				script_fail(file, line, "too many arguments");
			st->code = (int)parse_num(w[1], file, line);
			if (st->code < 100 || st->code > 999)
				script_fail(file, line, "bad code '%s'", w[1]);
		}
		if (nw > 2)
			script_fail(file, line, "too many arguments");
		if ((st->kind == S_BIG || st->kind == S_LONGLINE) &&
		    (st->n < 16 || st->n > 64L * 1024 * 1024))
			script_fail(file, line, "size out of range 16..64M");
		break;
	}
	default:
		if (*arg)
			script_fail(file, line, "%s takes no argument",
				kw[found].name);
		break;
	}
}

static void parse_rule(struct section *sec, char *s, char *colon,
	const char *file, int line)
{
	struct rule r = { 0 };
	char *w[4], *hash;
	int nw, i;
	char *steps = colon + 1;

	*colon = '\0';
	nw = split_words(s, w, 4);
	if (nw < 1 || nw > 2)
		script_fail(file, line, "bad point '%s'", s);
	hash = strchr(w[0], '#');
	if (hash) {
		*hash = '\0';
		r.occ = parse_num(hash + 1, file, line);
		if (r.occ < 1)
			script_fail(file, line, "#K counts from 1");
	}
	for (i = 0; i < P_N; i++)
		if (strcasecmp(w[0], pt_name[i]) == 0)
			break;
	if (i == P_N)
		script_fail(file, line, "unknown point '%s'", w[0]);
	r.pt = (enum pt)i;
	if (nw == 2) {
		if (r.pt != P_RCPT && r.pt != P_BODY)
			script_fail(file, line, "only rcpt and body take a number");
		r.n = parse_num(w[1], file, line);
		if (r.n < 1)
			script_fail(file, line, "the number counts from 1");
	} else if (r.pt == P_BODY) {
		script_fail(file, line, "body needs a byte count");
	}
	/* steps: split at ';' not preceded by '\' */
	for (char *p = steps;;) {
		char *q = p, *end;

		while (*q && !(*q == ';' && (q == steps || q[-1] != '\\')))
			q++;
		end = q;
		while (*p == ' ' || *p == '\t')
			p++;
		while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if (end > p) {
			char save = *end;

			*end = '\0';
			r.steps = xrealloc(r.steps,
				(r.nsteps + 1) * sizeof *r.steps);
			parse_step(&r.steps[r.nsteps++], p, file, line);
			*end = save;
		}
		if (!*q)
			break;
		p = q + 1;
	}
	if (r.nsteps == 0)
		script_fail(file, line, "no steps after ':'");
	sec->rules = xrealloc(sec->rules, (sec->nrules + 1) * sizeof r);
	sec->rules[sec->nrules++] = r;
}

static void ext_free(struct section *sec)
{
	for (int i = 0; i < sec->n_ext; i++)
		free(sec->ext[i]);
	sec->n_ext = 0;
}

static void ext_copy(struct section *to, const struct section *from)
{
	ext_free(to);
	for (int i = 0; i < from->n_ext; i++)
		to->ext[i] = xstrndup(from->ext[i], strlen(from->ext[i]));
	to->n_ext = from->n_ext;
}

/* "SIZE=100" -> "SIZE 100" */
static char *ext_word(const char *w)
{
	char *s = xstrndup(w, strlen(w));

	for (char *p = s; *p; p++)
		if (*p == '=')
			*p = ' ';
	return s;
}

static int ext_match(const char *ext, const char *kw)
{
	size_t kl = strcspn(kw, " =");
	size_t el = strcspn(ext, " ");

	return kl == el && strncasecmp(ext, kw, kl) == 0;
}

static void parse_ext(struct section *sec, char *args, const char *file,
	int line)
{
	char *w[MAX_EXT];
	int nw = split_words(args, w, MAX_EXT), mods = 0;

	for (int i = 0; i < nw; i++)
		if (w[i][0] == '+' || w[i][0] == '-')
			mods++;
	if (mods && mods != nw)
		script_fail(file, line, "ext: either all +X/-X or a full list");
	if (!mods || (nw == 1 && strcasecmp(w[0], "none") == 0)) {
		ext_free(sec);
		for (int i = 0; i < nw; i++)
			if (strcasecmp(w[i], "none") != 0)
				sec->ext[sec->n_ext++] = ext_word(w[i]);
		sec->ext_set = 1;
		return;
	}
	if (sec != &base && !sec->ext_set)
		ext_copy(sec, &base);
	for (int i = 0; i < nw; i++) {
		const char *kw = w[i] + 1;

		if (w[i][0] == '-') {
			for (int j = 0; j < sec->n_ext; j++)
				if (ext_match(sec->ext[j], kw)) {
					free(sec->ext[j]);
					memmove(&sec->ext[j], &sec->ext[j + 1],
						(size_t)(sec->n_ext - j - 1) *
						sizeof sec->ext[0]);
					sec->n_ext--, j--;
				}
		} else if (sec->n_ext < MAX_EXT) {
			sec->ext[sec->n_ext++] = ext_word(kw);
		}
	}
	sec->ext_set = 1;
}

static int listener_ref(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s && *end == '\0')
		return v >= 1 && v <= n_listeners ? (int)v : -1;
	for (int i = 0; i < n_listeners; i++)
		if (strcmp(listeners[i].host, s) == 0)
			return i + 1;
	return -1;
}

static struct section *parse_conn(char *args, const char *file, int line)
{
	char *w[3];
	int nw = split_words(args, w, 3);
	struct section *sec;

	if (nw < 1 || nw > 2)
		script_fail(file, line, "usage: conn N[-M][,...]|default [@L]");
	sections = xrealloc(sections, (n_sections + 1) * sizeof *sections);
	sec = &sections[n_sections++];
	memset(sec, 0, sizeof *sec);
	sec->sync_reject = -1;
	if (nw == 2) {
		if (w[1][0] != '@' ||
		    (sec->listener = listener_ref(w[1] + 1)) < 0)
			script_fail(file, line, "bad listener '%s'", w[1]);
	}
	if (strcasecmp(w[0], "default") == 0) {
		sec->is_default = 1;
		return sec;
	}
	for (char *tok = strtok(w[0], ","); tok; tok = strtok(NULL, ",")) {
		char *dash = strchr(tok, '-');
		long lo, hi;

		if (dash) {
			*dash = '\0';
			lo = parse_num(tok, file, line);
			hi = dash[1] ? parse_num(dash + 1, file, line) : -1;
		} else {
			lo = hi = parse_num(tok, file, line);
		}
		if (lo < 1 || (hi >= 0 && hi < lo))
			script_fail(file, line, "bad connection range");
		sec->ranges = xrealloc(sec->ranges,
			(sec->nranges + 1) * sizeof *sec->ranges);
		sec->ranges[sec->nranges][0] = lo;
		sec->ranges[sec->nranges][1] = hi;
		sec->nranges++;
	}
	if (sec->nranges == 0)
		script_fail(file, line, "no connection number");
	return sec;
}

static void script_load(const char *file)
{
	FILE *f = fopen(file, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int lineno = 0;
	struct section *cur = &base;

	if (f == NULL) {
		fprintf(stderr, "smtpd: %s: %s\n", file, strerror(errno));
		exit(2);
	}
	while ((n = getline(&line, &cap, f)) >= 0) {
		char *s = line, *colon;
		size_t wl;

		lineno++;
		while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
			s[--n] = '\0';
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '\0' || *s == '#')
			continue;
		wl = strcspn(s, " \t:");
		if (wl == 4 && strncasecmp(s, "conn", 4) == 0 && s[4] != ':') {
			cur = parse_conn(s + 4, file, lineno);
		} else if (wl == 3 && strncasecmp(s, "ext", 3) == 0 &&
			   s[3] != ':') {
			parse_ext(cur, s + 3, file, lineno);
		} else if (wl == 4 && strncasecmp(s, "sync", 4) == 0 &&
			   s[4] != ':') {
			char *w[2];

			if (split_words(s + 4, w, 2) != 1 ||
			    (strcasecmp(w[0], "reject") &&
			     strcasecmp(w[0], "record")))
				script_fail(file, lineno,
					"usage: sync reject|record");
			cur->sync_reject = strcasecmp(w[0], "reject") == 0;
		} else if ((colon = strchr(s, ':')) != NULL) {
			parse_rule(cur, s, colon, file, lineno);
		} else {
			script_fail(file, lineno, "cannot parse '%s'", s);
		}
	}
	free(line);
	fclose(f);
}

static void section_free(struct section *s)
{
	for (size_t i = 0; i < s->nrules; i++) {
		for (size_t j = 0; j < s->rules[i].nsteps; j++)
			free(s->rules[i].steps[j].data);
		free(s->rules[i].steps);
	}
	free(s->rules);
	free(s->ranges);
	ext_free(s);
}

static void script_free(void)
{
	for (size_t i = 0; i < n_sections; i++)
		section_free(&sections[i]);
	free(sections);
	sections = NULL;
	n_sections = 0;
	section_free(&base);
}

static const struct section *pick_section(int lidx, long n)
{
	const struct section *best = NULL;
	int best_score = -1;

	for (size_t i = 0; i < n_sections; i++) {
		const struct section *s = &sections[i];
		int m = 0, score;

		if (s->listener && s->listener != lidx)
			continue;
		if (s->is_default) {
			m = 1;
		} else {
			for (size_t r = 0; r < s->nranges; r++)
				if (n >= s->ranges[r][0] &&
				    (s->ranges[r][1] < 0 || n <= s->ranges[r][1]))
					m = 3;
		}
		if (!m)
			continue;
		score = m * 2 + (s->listener != 0);
		if (score > best_score)
			best = s, best_score = score;
	}
	return best;
}

/* ---- connections --------------------------------------------------------- */

struct conn {
	struct conn *prev, *next;	/* the live list (conn_lock) */
	int fd;
	SSL *ssl;
	long id;			/* global connection number */
	long n;				/* number on its listener */
	int lidx;			/* 1-based listener */
	const struct section *sec;	/* NULL: base only */
	char peer[INET6_ADDRSTRLEN + 8], local[INET6_ADDRSTRLEN + 8];

	char *in;			/* input: in[inoff..inlen) unread */
	size_t inlen, incap, inoff;
	int overlong;			/* discarding a too long line */
	struct buf out, held, rec, msg, tmp;
	struct buf last;		/* replies to this command (EHLO) */
	struct buf gen;			/* big/longline replies */
	int track;			/* collect them in last */
	long group;
	int replied;			/* output written since last wait */

	int dead;			/* 1 orderly close, 2 abrupt */
	const char *why;		/* close reason */
	int greeted;			/* 0 none, 1 HELO, 2 EHLO */
	int pipelining, esc;		/* as advertised in our EHLO reply */
	int sync_reject;
	long size_limit;		/* advertised SIZE, 0 = none */

	int in_tx;
	char *from;
	struct buf rcpts;		/* "<a>,<b>" */
	long n_rcpt_cmd, n_rcpt_ok;	/* RCPT commands / accepted, in tx */
	long occ[P_N];

	int in_data;
	size_t scan_from;		/* data scan resumes here (from inoff) */
	int at_ls;			/* scan_from is at a line start */
	int stuffed;			/* a data line starts with '.' */
	long barelf;			/* LFs without CR in the data */
	long discarded;			/* data bytes dropped past MSG_CAP */
	long body_fired;		/* highest "body N" fired */
	long msgs;			/* data transfers on this connection */
	long accepted;			/* messages accepted (2xx at dot) */
};

struct dflt {
	int code;
	const char *text;	/* wire-ready; NULL = no reply by default */
	size_t len;
};

static void rec_flush(struct conn *c)
{
	if (c->rec.len == 0)
		return;
	if (rec_fd >= 0 && write(rec_fd, c->rec.p, c->rec.len) < 0) {
		/* best effort */
	}
	c->rec.len = 0;
}

static void rec_line(struct conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void rec_line(struct conn *c, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	if (rec_fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	buf_addf(&c->rec, "%ld %s\n", c->id, line);
}

static void rec_bytes(struct conn *c, const char *what, const char *p,
	size_t n, size_t max)
{
	if (rec_fd < 0 || opt.brief)
		return;
	buf_addf(&c->rec, "%ld %s ", c->id, what);
	buf_addesc(&c->rec, p, n, max);
	buf_add(&c->rec, "\n", 1);
}

static int io_write(struct conn *c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w;

		if (c->ssl) {
			int r;

			ERR_clear_error();
			r = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
			if (r <= 0)
				return -1;
			w = r;
		} else {
			w = send(c->fd, p, n, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	touch();
	return 0;
}

static void set_dead(struct conn *c, int how, const char *why)
{
	if (!c->dead) {
		c->dead = how;
		c->why = why;
	}
}

/* Send the queued replies (record first). */
static void flush_out(struct conn *c)
{
	rec_flush(c);
	if (c->out.len == 0 || c->dead == 2)	/* abrupt: nothing more */
		return;
	if (io_write(c, c->out.p, c->out.len) < 0)
		set_dead(c, 2, "write-error");
	c->out.len = 0;
	c->replied = 1;
}

/* Read and discard until the client closes. */
static void stall(struct conn *c)
{
	char b[4096];
	ssize_t r;

	rec_flush(c);
	while ((r = recv(c->fd, b, sizeof b, 0)) > 0 ||
	       (r < 0 && errno == EINTR))
		if (r > 0)
			touch();
}

/* Read nothing; wait until the client closes (or the process ends). */
static void freeze(struct conn *c)
{
	struct pollfd p = { .fd = c->fd, .events = POLLRDHUP };

	rec_flush(c);
	for (;;) {
		int r = poll(&p, 1, -1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
			break;
	}
	/* read what is left, so that our close is a FIN, not a reset */
	for (int i = 0; i < 1024; i++) {
		char b[4096];

		if (recv(c->fd, b, sizeof b, MSG_DONTWAIT) <= 0)
			break;
	}
}

struct exec {
	long trickle;
	int hold;
};

static void emit(struct conn *c, const char *p, size_t n, struct exec *x)
{
	if (c->track)
		buf_add(&c->last, p, n);
	if (x->hold) {
		rec_bytes(c, "hold", p, n, REC_REPLY_MAX);
		buf_add(&c->held, p, n);
		x->hold = 0;
		return;
	}
	rec_bytes(c, "reply", p, n, REC_REPLY_MAX);
	if (x->trickle) {
		flush_out(c);
		for (size_t i = 0; i < n && !c->dead; i++) {
			if (io_write(c, p + i, 1) < 0)
				set_dead(c, 2, "write-error");
			if (i + 1 < n)
				msleep(x->trickle);
		}
		c->replied = 1;
	} else {
		buf_add(&c->out, p, n);
	}
	if (c->held.len) {
		buf_add(&c->out, c->held.p, c->held.len);
		c->held.len = 0;
	}
	if (c->out.len > OUT_CAP)
		flush_out(c);
}

static void endless(struct conn *c, long ms, int code)
{
	char line[64];
	int n;

	flush_out(c);
	rec_bytes(c, "reply", "[endless]", 9, 20);
	rec_flush(c);
	for (long i = 1; !c->dead && !atomic_load(&quitting); i++) {
		n = snprintf(line, sizeof line, "%03d-endless line %ld\r\n",
			code, i);
		if (io_write(c, line, (size_t)n) < 0)
			break;
		c->replied = 1;
		if (ms)
			msleep(ms);
	}
}

/* "big N": a multi-line reply of exactly N bytes; "longline N": one
 * line of exactly N bytes (both with CRLFs). */
static void gen_big(struct buf *b, const struct step *st)
{
	size_t n = (size_t)st->n;

	b->len = 0;
	if (st->kind == S_BIG) {
		while (b->len + 80 + 30 <= n) {
			buf_addf(b, "%03d-", st->code);
			buf_need(b, 74);
			memset(b->p + b->len, 'x', 74);
			b->len += 74;
			buf_add(b, "\r\n", 2);
		}
	}
	buf_addf(b, "%03d ", st->code);
	if (b->len + 2 < n) {
		buf_need(b, n - b->len - 2);
		memset(b->p + b->len, st->kind == S_BIG ? 'y' : 'x',
			n - b->len - 2);
		b->len = n - 2;
	}
	buf_add(b, "\r\n", 2);
}

/* The reply code a rule will leave the server with, without running it:
 * that of the last reply step before any terminal step; the default's
 * when the rule sends no reply and does not end the connection first (or
 * says noreply); -1 when it ends the connection before replying. */
static int rule_code(const struct rule *r, const struct dflt *d)
{
	int code = -1, noreply = 0;

	if (r == NULL)
		return d->code;
	for (size_t i = 0; i < r->nsteps; i++) {
		const struct step *st = &r->steps[i];

		if (is_terminal(st->kind))
			return code >= 0 ? code : noreply ? d->code : -1;
		if (st->kind == S_REPLY || st->kind == S_BIG ||
		    st->kind == S_LONGLINE)
			code = st->code;
		else if (st->kind == S_DEFAULT)
			code = d->code;
		else if (st->kind == S_NOREPLY)
			noreply = 1;
	}
	return code >= 0 ? code : d->code;
}

/* Run a rule (or the default reply).  Returns the effective code as
 * rule_code() says; c->dead is set when the connection ends here. */
static int run_rule(struct conn *c, const struct rule *r,
	const struct dflt *d)
{
	struct exec x = { 0, 0 };
	int code = rule_code(r, d), replied = 0, noreply = 0;

	if (r == NULL) {
		if (d->text)
			emit(c, d->text, d->len, &x);
		return code;
	}
	for (size_t i = 0; i < r->nsteps && !c->dead; i++) {
		const struct step *st = &r->steps[i];

		switch (st->kind) {
		case S_REPLY:
		case S_RAW:
			emit(c, st->data, st->len, &x);
			replied |= st->kind == S_REPLY;
			break;
		case S_DEFAULT:
			if (d->text)
				emit(c, d->text, d->len, &x);
			replied = 1;
			break;
		case S_BIG:
		case S_LONGLINE:
			gen_big(&c->gen, st);	/* not tmp: d->text may be there */
			emit(c, c->gen.p, c->gen.len, &x);
			replied = 1;
			break;
		case S_DELAY:
			rec_flush(c);
			msleep(st->n);
			break;
		case S_TRICKLE:
			x.trickle = st->n;
			break;
		case S_HOLD:
			x.hold = 1;
			break;
		case S_FLUSH:
			flush_out(c);
			break;
		case S_NOREPLY:
			noreply = 1;
			break;
		case S_CLOSE:
			flush_out(c);
			set_dead(c, 1, "script-close");
			break;
		case S_DROP:
			if (c->out.len)
				rec_line(c, "drop unsent=%zu", c->out.len);
			c->out.len = 0;
			set_dead(c, 2, "script-drop");
			break;
		case S_RST: {
			struct linger lg = { 1, 0 };

			c->out.len = 0;
			setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
			set_dead(c, 2, "script-rst");
			break;
		}
		case S_STALL:
			flush_out(c);
			stall(c);
			set_dead(c, 2, "stall-end");
			break;
		case S_FREEZE:
			flush_out(c);
			freeze(c);
			set_dead(c, 2, "freeze-end");
			break;
		case S_ENDLESS:
			endless(c, st->n, st->code);
			set_dead(c, 2, "endless-end");
			break;
		}
	}
	if (!c->dead && !replied && !noreply && d->text)
		emit(c, d->text, d->len, &x);
	return code;
}

static const struct rule *find_in(const struct section *s, enum pt pt,
	long n, long occ)
{
	const struct rule *best = NULL;
	int best_score = -1;

	for (size_t i = 0; s && i < s->nrules; i++) {
		const struct rule *r = &s->rules[i];
		int score;

		if (r->pt != pt || (r->n && r->n != n) ||
		    (r->occ && r->occ != occ))
			continue;
		score = (r->occ ? 2 : 0) + (r->n ? 1 : 0);
		if (score > best_score)
			best = r, best_score = score;
	}
	return best;
}

static const struct rule *find_rule(struct conn *c, enum pt pt, long n,
	long occ)
{
	const struct rule *r = find_in(c->sec, pt, n, occ);

	return r ? r : find_in(&base, pt, n, occ);
}

/* Default reply "CODE[ ESC] TEXT\r\n" into c->tmp; ESC only when
 * ENHANCEDSTATUSCODES was advertised. */
static void dflt_set(struct conn *c, struct dflt *d, int code,
	const char *esc, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void dflt_set(struct conn *c, struct dflt *d, int code,
	const char *esc, const char *fmt, ...)
{
	char text[512], *o;
	const char *t = fmt;
	size_t tl, el = c->esc && esc ? strlen(esc) : 0, n = 4;

	if (strchr(fmt, '%')) {		/* the common replies need no printf */
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(text, sizeof text, fmt, ap);
		va_end(ap);
		t = text;
	}
	tl = strlen(t);
	c->tmp.len = 0;
	buf_need(&c->tmp, tl + el + 8);
	o = c->tmp.p;
	o[0] = (char)('0' + code / 100 % 10);
	o[1] = (char)('0' + code / 10 % 10);
	o[2] = (char)('0' + code % 10);
	o[3] = ' ';
	if (el) {
		memcpy(o + n, esc, el);
		n += el;
		o[n++] = ' ';
	}
	memcpy(o + n, t, tl);
	n += tl;
	o[n++] = '\r';
	o[n++] = '\n';
	o[n] = '\0';
	c->tmp.len = n;
	d->code = code;
	d->text = c->tmp.p;
	d->len = n;
}

static void ehlo_default(struct conn *c, struct dflt *d)
{
	const struct section *s = c->sec && c->sec->ext_set ? c->sec : &base;

	const char *kw[MAX_EXT];
	int n = 0;

	/* RFC 3207: STARTTLS is not offered again inside TLS */
	for (int i = 0; i < s->n_ext; i++)
		if (!(c->ssl && ext_match(s->ext[i], "STARTTLS")))
			kw[n++] = s->ext[i];
	c->tmp.len = 0;
	buf_addf(&c->tmp, "250%c%s\r\n", n ? '-' : ' ', opt.hostname);
	for (int i = 0; i < n; i++)
		buf_addf(&c->tmp, "250%c%s\r\n", i + 1 < n ? '-' : ' ', kw[i]);
	d->code = 250;
	d->text = c->tmp.p;
	d->len = c->tmp.len;
}

static void tx_reset(struct conn *c)
{
	free(c->from);
	c->from = NULL;
	c->in_tx = 0;
	c->rcpts.len = 0;
	c->n_rcpt_cmd = c->n_rcpt_ok = 0;
}

/* "FROM:<addr> params" / "TO:<addr> params": the <addr> part (malloc'd),
 * params in *params_r; NULL on syntax error. */
static char *parse_path(const char *p, size_t n, const char *kw,
	const char **params_r, size_t *plen_r)
{
	size_t kl = strlen(kw), i;
	const char *lt, *gt;

	if (n < kl || strncasecmp(p, kw, kl) != 0)
		return NULL;
	for (i = kl; i < n && p[i] == ' '; i++)
		;
	if (i == n || p[i] != '<')
		return NULL;
	lt = p + i;
	gt = memchr(lt, '>', n - i);
	if (gt == NULL)
		return NULL;
	*params_r = gt + 1;
	*plen_r = n - (size_t)(gt + 1 - p);
	return xstrndup(lt, (size_t)(gt - lt + 1));
}

static long param_size(const char *p, size_t n)
{
	for (size_t i = 0; i + 5 <= n; i++)
		if ((i == 0 || p[i - 1] == ' ') && strncasecmp(p + i, "SIZE=", 5) == 0)
			return strtol(p + i + 5, NULL, 10);
	return -1;
}

static void tls_start(struct conn *c);

/* RFC 2920 violation in "sync reject" mode: say so and close. */
static void sync_error(struct conn *c, size_t pending)
{
	struct exec x = { 0, 0 };
	struct dflt d;

	rec_line(c, "sync-error pending=%zu", pending);
	dflt_set(c, &d, 554, "5.5.0", "Error: SMTP synchronization error");
	emit(c, d.text, d.len, &x);
	flush_out(c);
	set_dead(c, 1, "sync-error");
}

static void handle_cmd(struct conn *c, const char *line, size_t len)
{
	static const struct { const char *verb; enum pt pt; } verbs[] = {
		{ "EHLO", P_EHLO }, { "HELO", P_HELO }, { "MAIL", P_MAIL },
		{ "RCPT", P_RCPT }, { "DATA", P_DATA }, { "RSET", P_RSET },
		{ "QUIT", P_QUIT }, { "STARTTLS", P_STARTTLS },
		{ "NOOP", P_NOOP }, { "VRFY", P_VRFY }, { "EXPN", P_VRFY },
	};
	enum pt pt = P_OTHER;
	struct dflt d = { 0, NULL, 0 };
	const char *arg = "", *params = "";
	size_t alen = 0, plen = 0;
	char *path = NULL;
	long n = 0;
	int code, pending = c->inoff < c->inlen;

	if (!opt.brief && rec_fd >= 0) {
		buf_addf(&c->rec, "%ld cmd g=%ld ", c->id, c->group);
		buf_addesc(&c->rec, line, len, REC_CMD_MAX);
		buf_add(&c->rec, "\n", 1);
	}
	for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
		if (word_is(line, len, verbs[i].verb)) {
			pt = verbs[i].pt;
			arg = line + strlen(verbs[i].verb);
			alen = len - strlen(verbs[i].verb);
			while (alen && (*arg == ' ' || *arg == '\t'))
				arg++, alen--;
			break;
		}
	/* RFC 2920: without PIPELINING every command waits for its reply;
	 * with it, these must still end a group. */
	if (c->sync_reject && pending &&
	    (!c->pipelining || pt == P_EHLO || pt == P_HELO || pt == P_DATA ||
	     pt == P_QUIT || pt == P_NOOP || pt == P_VRFY ||
	     pt == P_STARTTLS || pt == P_OTHER)) {
		sync_error(c, c->inlen - c->inoff);
		return;
	}
	c->occ[pt]++;
	switch (pt) {
	case P_EHLO:
	case P_HELO:
		if (alen == 0)
			dflt_set(c, &d, 501, "5.5.4", "Syntax: %s hostname",
				pt == P_EHLO ? "EHLO" : "HELO");
		else if (pt == P_EHLO)
			ehlo_default(c, &d);
		else
			dflt_set(c, &d, 250, NULL, "%s", opt.hostname);
		break;
	case P_MAIL: {
		long sz;

		path = parse_path(arg, alen, "FROM:", &params, &plen);
		if (!c->greeted)
			dflt_set(c, &d, 503, "5.5.1", "Error: send HELO/EHLO first");
		else if (c->in_tx)
			dflt_set(c, &d, 503, "5.5.1", "Error: nested MAIL command");
		else if (path == NULL)
			dflt_set(c, &d, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
		else if (c->size_limit && (sz = param_size(params, plen)) >
			 c->size_limit)
			dflt_set(c, &d, 552, "5.3.4",
				"Message size exceeds fixed limit");
		else
			dflt_set(c, &d, 250, "2.1.0", "Ok");
		break;
	}
	case P_RCPT:
		n = ++c->n_rcpt_cmd;
		path = parse_path(arg, alen, "TO:", &params, &plen);
		if (!c->in_tx)
			dflt_set(c, &d, 503, "5.5.1", "Error: need MAIL command");
		else if (path == NULL)
			dflt_set(c, &d, 501, "5.5.4", "Syntax: RCPT TO:<address>");
		else if (c->n_rcpt_ok >= MAX_RCPT)
			dflt_set(c, &d, 452, "4.5.3", "Error: too many recipients");
		else
			dflt_set(c, &d, 250, "2.1.5", "Ok");
		break;
	case P_DATA:
		if (!c->in_tx)
			dflt_set(c, &d, 503, "5.5.1", "Error: need RCPT command");
		else if (c->n_rcpt_ok == 0)
			dflt_set(c, &d, 554, "5.5.1", "Error: no valid recipients");
		else
			dflt_set(c, &d, 354, NULL,
				"End data with <CR><LF>.<CR><LF>");
		break;
	case P_RSET:
		dflt_set(c, &d, 250, "2.0.0", "Ok");
		break;
	case P_NOOP:
		dflt_set(c, &d, 250, "2.0.0", "Ok");
		break;
	case P_VRFY:
		dflt_set(c, &d, 252, "2.0.0", "Cannot VRFY user");
		break;
	case P_QUIT:
		dflt_set(c, &d, 221, "2.0.0", "Bye");
		break;
	case P_STARTTLS:
		if (alen)
			dflt_set(c, &d, 501, "5.5.4", "Syntax: STARTTLS");
		else if (c->ssl)
			dflt_set(c, &d, 554, "5.5.1", "Error: TLS already active");
		else if (ssl_ctx == NULL)
			dflt_set(c, &d, 454, "4.7.0", "TLS not available");
		else
			dflt_set(c, &d, 220, "2.0.0", "Ready to start TLS");
		break;
	default:
		if (word_is(line, len, "HELP"))
			dflt_set(c, &d, 214, "2.0.0", "qkit test smtpd");
		else if (len == 0)
			dflt_set(c, &d, 500, "5.5.2", "Error: bad syntax");
		else
			dflt_set(c, &d, 500, "5.5.2",
				"Error: command not recognized");
		break;
	}
	c->last.len = 0;
	c->track = pt == P_EHLO;
	code = run_rule(c, find_rule(c, pt, n, c->occ[pt]), &d);
	c->track = 0;
	if (c->dead) {
		free(path);
		return;
	}
	switch (pt) {
	case P_EHLO:
	case P_HELO:
		if (code / 100 == 2) {
			tx_reset(c);
			c->greeted = pt == P_EHLO ? 2 : 1;
			/* what we really advertised: the EHLO reply just sent */
			c->pipelining = pt == P_EHLO && c->last.len &&
				memmem(c->last.p, c->last.len,
					"PIPELINING", 10) != NULL;
			c->esc = pt == P_EHLO && c->last.len &&
				memmem(c->last.p, c->last.len,
					"ENHANCEDSTATUSCODES", 19) != NULL;
		}
		break;
	case P_MAIL:
		if (code / 100 == 2) {
			tx_reset(c);
			c->in_tx = 1;
			c->from = path ? path : xstrndup("<>", 2);
			path = NULL;
		}
		break;
	case P_RCPT:
		if (code / 100 == 2) {
			if (c->rcpts.len)
				buf_add(&c->rcpts, ",", 1);
			if (path)
				buf_adds(&c->rcpts, path);
			else
				buf_addesc(&c->rcpts, arg, alen, 200);
			c->n_rcpt_ok++;
		}
		break;
	case P_DATA:
		if (code == 354) {
			c->in_data = 1;
			c->scan_from = 0;
			c->at_ls = 1;
			c->stuffed = 0;
			c->barelf = 0;
			c->discarded = 0;
			c->body_fired = 0;
			c->msgs++;
		}
		break;
	case P_RSET:
		if (code / 100 == 2)
			tx_reset(c);
		break;
	case P_QUIT:
		if (code / 100 == 2) {
			flush_out(c);
			set_dead(c, 1, "quit");
		}
		break;
	case P_STARTTLS:
		if (code == 220)
			tls_start(c);
		break;
	default:
		break;
	}
	free(path);
}

static void record_msg(struct conn *c, int code, const char *data,
	size_t len, long wire)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	char file[PATH_MAX];
	static const char hexd[] = "0123456789abcdef";
	int eight = 0;
	const char *id = NULL;
	size_t idlen = 0, i = 0;

	for (; i + 8 <= len && !eight; i += 8) {
		uint64_t v;

		memcpy(&v, data + i, 8);
		eight = (v & 0x8080808080808080ULL) != 0;
	}
	for (; i < len && !eight; i++)
		eight = ((unsigned char)data[i] & 0x80) != 0;
	/* Message-ID: first one in the header section */
	for (const char *p = data, *e = data + len; p < e;) {
		const char *nl = memchr(p, '\n', (size_t)(e - p));
		size_t ll = nl ? (size_t)(nl - p) : (size_t)(e - p);

		if (ll == 0 || (ll == 1 && p[0] == '\r'))
			break;
		if (ll > 11 && strncasecmp(p, "Message-ID:", 11) == 0) {
			id = p + 11;
			idlen = ll - 11;
			while (idlen && (*id == ' ' || *id == '\t'))
				id++, idlen--;
			while (idlen && (id[idlen - 1] == '\r' ||
					 id[idlen - 1] == ' '))
				idlen--;
			break;
		}
		if (!nl)
			break;
		p = nl + 1;
	}
	if (md_sha256 == NULL ||
	    !EVP_Digest(data, len, md, &mdlen, md_sha256, NULL))
		mdlen = 0;
	for (unsigned int k = 0; k < mdlen; k++) {
		hex[2 * k] = hexd[md[k] >> 4];
		hex[2 * k + 1] = hexd[md[k] & 15];
	}
	hex[2 * mdlen] = '\0';
	file[0] = '\0';
	if (opt.datadir && !c->discarded) {
		int fd;

		snprintf(file, sizeof file, "%s/%ld.%ld.eml", opt.datadir,
			c->id, c->msgs);
		fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || write(fd, data, len) != (ssize_t)len)
			snprintf(file, sizeof file, "error:%s", strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	if (rec_fd < 0)
		return;
	buf_addf(&c->rec, "%ld msg n=%ld t=%ld ", c->id, c->msgs, t_rel());
	if (code < 0)
		buf_adds(&c->rec, "code=-");
	else
		buf_addf(&c->rec, "code=%d", code);
	buf_adds(&c->rec, " from=");
	buf_addesc(&c->rec, c->from ? c->from : "-", c->from ? strlen(c->from) : 1, 1000);
	buf_adds(&c->rec, " to=");
	buf_addesc(&c->rec, c->rcpts.len ? c->rcpts.p : "-",
		c->rcpts.len ? c->rcpts.len : 1, (size_t)-1);
	buf_addf(&c->rec, " size=%zu wire=%ld sha256=%s barelf=%ld 8bit=%d file=%s msgid=",
		c->discarded ? (size_t)0 : len, wire, c->discarded ? "-" : hex,
		c->barelf, eight, file[0] ? file : "-");
	if (id)
		buf_addesc(&c->rec, id, idlen, 200);
	else
		buf_adds(&c->rec, "-");
	buf_add(&c->rec, "\n", 1);
}

/* End of data found: w[0..wlen) is the wire data up to and including the
 * CRLF before the final dot (wlen 0 for an empty message). */
static void handle_message(struct conn *c, const char *w, size_t wlen)
{
	struct dflt d;
	const struct rule *r;
	long wire = c->discarded + (long)wlen;
	int code;

	const char *data = w;
	size_t len = wlen;

	/* undo dot-stuffing: a '.' starting a line is dropped */
	c->msg.len = 0;
	if (!c->discarded && c->stuffed) {
		const char *p = w, *e = w + wlen;

		buf_need(&c->msg, wlen);
		if (p < e && *p == '.')
			p++;
		while (p < e) {
			const char *q = memmem(p, (size_t)(e - p), "\r\n.", 3);
			size_t n = q ? (size_t)(q - p) + 2 : (size_t)(e - p);

			memcpy(c->msg.p + c->msg.len, p, n);
			c->msg.len += n;
			p += n + (q ? 1 : 0);
		}
		data = c->msg.p;
		len = c->msg.len;
	} else if (c->discarded) {
		len = 0;
	}
	if (c->discarded)
		dflt_set(c, &d, 552, "5.3.4", "Error: message too big");
	else if (c->size_limit && (long)len > c->size_limit)
		dflt_set(c, &d, 552, "5.3.4", "Error: message size exceeds limit");
	else
		dflt_set(c, &d, 250, "2.0.0", "Ok: queued as %ld.%ld",
			c->id, c->msgs);
	r = find_rule(c, P_DOT, 0, ++c->occ[P_DOT]);
	code = rule_code(r, &d);
	record_msg(c, code, data, len, wire);
	if (code / 100 == 2) {
		atomic_fetch_add(&st_msgs, 1);
		atomic_fetch_add(&st_rcpts, c->n_rcpt_ok);
		c->accepted++;
	}
	/* dflt_set used c->tmp; record_msg did not touch it */
	run_rule(c, r, &d);
	tx_reset(c);
}

/* "body N" rules: fire those whose N was reached by got bytes, when the
 * message was not complete within N bytes (complete: its full length, 0
 * when not complete yet). */
static void check_body(struct conn *c, long got, long complete)
{
	for (;;) {
		const struct rule *best = NULL;
		const struct section *ss[2] = { c->sec, &base };

		for (int k = 0; k < 2 && !best; k++)
			for (size_t i = 0; ss[k] && i < ss[k]->nrules; i++) {
				const struct rule *r = &ss[k]->rules[i];

				if (r->pt != P_BODY || r->n <= c->body_fired ||
				    r->n > got || (complete && complete <= r->n) ||
				    (r->occ && r->occ != c->msgs))
					continue;
				if (!best || r->n < best->n)
					best = r;
			}
		if (!best)
			return;
		{
			struct dflt d = { 0, NULL, 0 };

			c->body_fired = best->n;
			rec_line(c, "body bytes=%ld rule=%ld", got, best->n);
			run_rule(c, best, &d);
		}
		if (c->dead)
			return;
	}
}

/* Data mode: 1 when a message was completed (go on), 0 when more input
 * is needed or the connection ended.  One memchr per line: finds the
 * final "." line (a line ends with CRLF only), notes dot-stuffed lines and
 * bare LFs on the way; resumes where the last call stopped. */
static int data_step(struct conn *c)
{
	char *p = c->in + c->inoff;
	size_t avail = c->inlen - c->inoff, wlen = 0, consume = 0;
	int found = 0;

	for (;;) {
		size_t ls = c->scan_from;
		char *nl;

		if (c->at_ls && ls < avail && p[ls] == '.') {
			if (avail - ls < 3)
				break;
			if (p[ls + 1] == '\r' && p[ls + 2] == '\n') {
				found = 1;
				wlen = ls;
				consume = ls + 3;
				break;
			}
			c->stuffed = 1;
		}
		nl = ls < avail ? memchr(p + ls, '\n', avail - ls) : NULL;
		if (nl == NULL) {
			c->at_ls = c->at_ls && ls == avail;
			c->scan_from = avail;
			break;
		}
		if (nl > p && nl[-1] == '\r') {
			c->at_ls = 1;
		} else {
			c->at_ls = 0;
			c->barelf++;
		}
		c->scan_from = (size_t)(nl - p) + 1;
	}
	check_body(c, c->discarded + (long)avail,
		found ? c->discarded + (long)consume : 0);
	if (c->dead || !found)
		return 0;
	if (c->sync_reject && !c->pipelining && consume < avail) {
		sync_error(c, avail - consume);
		return 0;
	}
	c->in_data = 0;
	c->inoff += consume;
	handle_message(c, p, wlen);
	return !c->dead;
}

static void process_input(struct conn *c)
{
	while (!c->dead) {
		char *p, *nl;
		size_t avail, ll;

		if (c->in_data) {
			if (!data_step(c))
				return;
			continue;
		}
		p = c->in + c->inoff;
		avail = c->inlen - c->inoff;
		nl = memchr(p, '\n', avail);
		if (nl == NULL) {
			if (avail > MAX_LINE) {	/* drop it, answer at its end */
				c->overlong = 1;
				c->inlen = c->inoff;
			}
			return;
		}
		ll = (size_t)(nl - p);
		c->inoff += ll + 1;
		if (ll && p[ll - 1] == '\r')
			ll--;
		if (c->overlong || ll > MAX_LINE) {
			struct exec x = { 0, 0 };
			struct dflt d;

			c->overlong = 0;
			if (!opt.brief)
				rec_line(c, "cmd g=%ld [line too long]", c->group);
			dflt_set(c, &d, 500, "5.5.2", "Error: line too long");
			emit(c, d.text, d.len, &x);
			continue;
		}
		handle_cmd(c, p, ll);
	}
}

/* Is input waiting (so that reading now would not block)? */
static int input_ready(struct conn *c)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };

	if (c->ssl && SSL_pending(c->ssl) > 0)
		return 1;
	return poll(&p, 1, 0) > 0;
}

/* Read more input; returns the byte count, 0 on EOF, -1 on error. */
static ssize_t fill_input(struct conn *c)
{
	ssize_t r;

	/* Input already waiting was sent before our replies: read it in
	 * the same group.  Else send the replies and start a new group. */
	if ((c->out.len || c->held.len) && !input_ready(c)) {
		flush_out(c);
		if (c->dead)
			return -1;
	}
	if (c->replied) {
		c->group++;
		c->replied = 0;
	}
	rec_flush(c);
	if (c->inoff > 0) {
		memmove(c->in, c->in + c->inoff, c->inlen - c->inoff);
		c->inlen -= c->inoff;
		c->inoff = 0;
	}
	if (c->inlen == c->incap) {
		if (c->in_data && c->incap < (size_t)MSG_CAP) {
			c->incap *= 2;
			c->in = xrealloc(c->in, c->incap);
		} else if (c->in_data) {
			/* too big: keep the unscanned tail and one byte before
			 * it (for the CR of a CRLF) */
			size_t k = c->scan_from ? c->scan_from - 1 : 0;

			c->discarded += (long)k;
			memmove(c->in, c->in + k, c->inlen - k);
			c->inlen -= k;
			c->scan_from -= k;
		} else {
			c->inlen = 0;	/* cannot happen: lines are bounded */
		}
	}
	for (;;) {
		if (c->ssl) {
			int n;

			ERR_clear_error();
			n = SSL_read(c->ssl, c->in + c->inlen,
				(int)(c->incap - c->inlen));
			if (n > 0) {
				r = n;
			} else {
				int e = SSL_get_error(c->ssl, n);

				r = e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
			}
		} else {
			r = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, 0);
			if (r < 0 && errno == EINTR)
				continue;
		}
		break;
	}
	if (r > 0) {
		c->inlen += (size_t)r;
		touch();
	}
	return r;
}

static void tls_start(struct conn *c)
{
	char err[256] = "";
	const char *v, *ciph;
	X509 *cert;
	int resumed;

	flush_out(c);
	if (c->dead)
		return;
	if (c->inoff < c->inlen) {	/* RFC 3207: no plaintext injection */
		rec_line(c, "discard plaintext-after-starttls=%zu",
			c->inlen - c->inoff);
		c->inoff = c->inlen = 0;
	}
	rec_flush(c);
	if (ssl_ctx == NULL) {
		set_dead(c, 2, "no-tls-certificate");
		return;
	}
	c->ssl = SSL_new(ssl_ctx);
	if (c->ssl == NULL || !SSL_set_fd(c->ssl, c->fd)) {
		set_dead(c, 2, "tls-setup-failed");
		return;
	}
	ERR_clear_error();
	if (SSL_accept(c->ssl) != 1) {
		unsigned long e = ERR_peek_last_error();

		if (e)
			ERR_error_string_n(e, err, sizeof err);
		rec_line(c, "tls-fail t=%ld error=%s", t_rel(),
			err[0] ? err : "eof-or-io");
		SSL_free(c->ssl);
		c->ssl = NULL;
		set_dead(c, 2, "tls-fail");
		return;
	}
	v = SSL_get_version(c->ssl);
	ciph = SSL_get_cipher_name(c->ssl);
	resumed = SSL_session_reused(c->ssl);
	atomic_fetch_add(&st_tls, 1);
	if (resumed)
		atomic_fetch_add(&st_resumed, 1);
	if (rec_fd >= 0) {
		buf_addf(&c->rec, "%ld tls t=%ld version=%s cipher=%s resumed=%d cert=",
			c->id, t_rel(), v ? v : "-", ciph ? ciph : "-", resumed);
		cert = SSL_get_peer_certificate(c->ssl);
		if (cert) {
			char *s = X509_NAME_oneline(X509_get_subject_name(cert),
				NULL, 0);

			buf_addesc(&c->rec, s ? s : "?", s ? strlen(s) : 1, 500);
			OPENSSL_free(s);
			X509_free(cert);
		} else {
			buf_adds(&c->rec, "-");
		}
		buf_add(&c->rec, "\n", 1);
	}
	/* RFC 3207: forget everything learned before TLS */
	tx_reset(c);
	c->greeted = 0;
	c->pipelining = c->esc = 0;
	{
		struct dflt d = { 0, NULL, 0 };

		run_rule(c, find_rule(c, P_TLS, 0, ++c->occ[P_TLS]), &d);
	}
}

static void conn_run(struct conn *c)
{
	struct dflt d;
	const struct section *s = c->sec && c->sec->sync_reject >= 0 ?
		c->sec : &base;
	const struct section *es = c->sec && c->sec->ext_set ? c->sec : &base;

	c->sync_reject = s->sync_reject > 0;
	c->size_limit = 0;
	for (int i = 0; i < es->n_ext; i++)
		if (ext_match(es->ext[i], "SIZE"))
			c->size_limit = strtol(es->ext[i] + 4, NULL, 10);
	rec_line(c, "open t=%ld listener=%d n=%ld peer=%s local=%s", t_rel(),
		c->lidx, c->n, c->peer, c->local);
	dflt_set(c, &d, 220, NULL, "%s ESMTP qkit test smtpd", opt.hostname);
	run_rule(c, find_rule(c, P_BANNER, 0, ++c->occ[P_BANNER]), &d);
	while (!c->dead) {
		ssize_t r;

		process_input(c);
		if (c->dead)
			break;
		r = fill_input(c);
		if (r == 0)
			set_dead(c, 1, c->in_data ? "eof-in-data" : "eof");
		else if (r < 0)
			set_dead(c, 2, c->in_data ? "error-in-data" : "read-error");
	}
	if (c->dead == 1) {
		flush_out(c);
		if (c->ssl)
			SSL_shutdown(c->ssl);
	}
	rec_line(c, "close t=%ld reason=%s msgs=%ld accepted=%ld", t_rel(),
		atomic_load(&quitting) ? "server-exit" : c->why ? c->why : "?",
		c->msgs, c->accepted);
	rec_flush(c);
}

static void conn_free(struct conn *c)
{
	if (c->ssl)
		SSL_free(c->ssl);
	close(c->fd);
	free(c->in);
	free(c->from);
	buf_free(&c->out);
	buf_free(&c->held);
	buf_free(&c->rec);
	buf_free(&c->msg);
	buf_free(&c->tmp);
	buf_free(&c->last);
	buf_free(&c->gen);
	buf_free(&c->rcpts);
	free(c);
	/* OpenSSL keeps per-thread error state: release it now */
	OPENSSL_thread_stop();
}

/* Live connections, so that the exit can wake their threads up. */
static pthread_mutex_t conn_lock = PTHREAD_MUTEX_INITIALIZER;
static struct conn *conn_list;

static void conn_link(struct conn *c)
{
	pthread_mutex_lock(&conn_lock);
	c->next = conn_list;
	if (conn_list)
		conn_list->prev = c;
	conn_list = c;
	pthread_mutex_unlock(&conn_lock);
}

static void conn_unlink(struct conn *c)
{
	pthread_mutex_lock(&conn_lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		conn_list = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&conn_lock);
}

static void *conn_thread(void *arg)
{
	conn_run(arg);
	conn_unlink(arg);	/* before its fd is closed */
	conn_free(arg);
	atomic_fetch_sub(&live_threads, 1);
	return NULL;
}

/* At exit: cut every connection (blocked reads and writes return) and
 * give the threads up to two seconds to record their end. */
static void conns_stop(void)
{
	atomic_store(&quitting, 1);
	pthread_mutex_lock(&conn_lock);
	for (struct conn *c = conn_list; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&conn_lock);
	for (int i = 0; i < 200 && atomic_load(&live_threads) > 0; i++) {
		struct timespec ts = { 0, 10 * 1000000L };

		nanosleep(&ts, NULL);
	}
}

/* ---- listeners, TLS context, main loop ------------------------------------ */

static void usage(void)
{
	fprintf(stderr,
"usage: smtpd [-l ADDR[:PORT][,refuse][,max=N]]... [-p PORT] [-s SCRIPT]\n"
"             [-r RECORD [-B]] [-d DIR] [-c CERT [-k KEY] [-T 1.2|1.3] [-C]]\n"
"             [-t IDLE_SECONDS] [-n HOSTNAME]\n"
"See tests/smtpd.md.\n");
	exit(2);
}

static void sockname(const struct sockaddr_storage *ss, char *out, size_t n)
{
	char a[INET6_ADDRSTRLEN] = "?";
	int port = 0;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)ss;

		inet_ntop(AF_INET, &s4->sin_addr, a, sizeof a);
		port = ntohs(s4->sin_port);
		snprintf(out, n, "%s:%d", a, port);
	} else {
		const struct sockaddr_in6 *s6 = (const void *)ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof a);
		port = ntohs(s6->sin6_port);
		snprintf(out, n, "[%s]:%d", a, port);
	}
}

static void parse_listener(const char *spec)
{
	struct listener *l;
	char buf[256], *opts, *hostpart, *portpart = NULL;
	struct in_addr a4;
	struct in6_addr a6;

	if (n_listeners == MAX_LISTEN) {
		fprintf(stderr, "smtpd: at most %d listeners\n", MAX_LISTEN);
		exit(2);
	}
	l = &listeners[n_listeners];
	memset(l, 0, sizeof *l);
	l->port_given = -1;
	l->fd = -1;
	snprintf(buf, sizeof buf, "%s", spec);
	opts = strchr(buf, ',');
	if (opts)
		*opts++ = '\0';
	hostpart = buf;
	if (buf[0] == '[') {
		char *rb = strchr(buf, ']');

		if (rb == NULL)
			goto bad;
		*rb = '\0';
		hostpart = buf + 1;
		if (rb[1] == ':')
			portpart = rb + 2;
		else if (rb[1] != '\0')
			goto bad;
	} else {
		char *colon = strchr(buf, ':');

		if (colon && strchr(colon + 1, ':') == NULL) {
			*colon = '\0';
			portpart = colon + 1;
		}
	}
	if (inet_pton(AF_INET, hostpart, &a4) == 1) {
		l->family = AF_INET;
		if ((ntohl(a4.s_addr) >> 24) != 127) {
			fprintf(stderr, "smtpd: %s: loopback (127/8, ::1) only\n", spec);
			exit(2);
		}
	} else if (inet_pton(AF_INET6, hostpart, &a6) == 1) {
		l->family = AF_INET6;
		if (!IN6_IS_ADDR_LOOPBACK(&a6)) {
			fprintf(stderr, "smtpd: %s: loopback (127/8, ::1) only\n", spec);
			exit(2);
		}
	} else {
		goto bad;
	}
	if (strlen(hostpart) >= sizeof l->host)
		goto bad;
	memcpy(l->host, hostpart, strlen(hostpart) + 1);
	if (portpart) {
		char *end;
		long p = strtol(portpart, &end, 10);

		if (*portpart == '\0' || *end || p < 0 || p > 65535)
			goto bad;
		l->port_given = (int)p;
	}
	for (char *o = opts ? strtok(opts, ",") : NULL; o; o = strtok(NULL, ",")) {
		if (strcmp(o, "refuse") == 0)
			l->refuse = 1;
		else if (strncmp(o, "max=", 4) == 0 && atol(o + 4) > 0)
			l->max = atol(o + 4);
		else
			goto bad;
	}
	n_listeners++;
	return;
bad:
	fprintf(stderr, "smtpd: bad listener '%s'\n", spec);
	exit(2);
}

/* A socket bound to l's address and port; listening unless refuse. */
static int open_one(struct listener *l, int port, int refuse)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1;

	memset(&ss, 0, sizeof ss);
	if (l->family == AF_INET) {
		struct sockaddr_in *s4 = (void *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, l->host, &s4->sin_addr);
		sl = sizeof *s4;
	} else {
		struct sockaddr_in6 *s6 = (void *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, l->host, &s6->sin6_addr);
		sl = sizeof *s6;
	}
	fd = socket(l->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (l->family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 ||
	    (!refuse && listen(fd, 1024) < 0)) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	sl = sizeof ss;
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	l->port = ntohs(l->family == AF_INET ?
		((struct sockaddr_in *)&ss)->sin_port :
		((struct sockaddr_in6 *)&ss)->sin6_port);
	return fd;
}

static void open_listeners(void)
{
	for (int attempt = 0; attempt < 50; attempt++) {
		int shared = opt.port, i;

		for (i = 0; i < n_listeners; i++) {
			struct listener *l = &listeners[i];
			int port = l->port_given >= 0 ? l->port_given : shared;

			l->fd = open_one(l, port, l->refuse);
			if (l->fd < 0)
				break;
			if (l->port_given < 0 && shared == 0)
				shared = l->port;
		}
		if (i == n_listeners)
			return;
		{
			int e = errno;
			int retry = e == EADDRINUSE && opt.port == 0 &&
				listeners[i].port_given < 0 && shared != 0;

			for (int j = 0; j < i; j++)
				close(listeners[j].fd), listeners[j].fd = -1;
			if (!retry) {
				fprintf(stderr, "smtpd: listen on %s: %s\n",
					listeners[i].host, strerror(e));
				exit(1);
			}
		}
	}
	fprintf(stderr, "smtpd: no free shared port found\n");
	exit(1);
}

static int verify_any(int ok, X509_STORE_CTX *x)
{
	(void)ok;
	(void)x;
	return 1;	/* record the client certificate, never judge it */
}

static void tls_init(void)
{
	static const unsigned char sid_ctx[] = "qkit-smtpd";

	if (opt.cert == NULL)
		return;
	ssl_ctx = SSL_CTX_new(TLS_server_method());
	if (ssl_ctx == NULL ||
	    !SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ssl_ctx, opt.tls_max) ||
	    SSL_CTX_use_certificate_chain_file(ssl_ctx, opt.cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ssl_ctx,
		opt.key ? opt.key : opt.cert, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ssl_ctx) != 1) {
		char err[256] = "?";

		ERR_error_string_n(ERR_get_error(), err, sizeof err);
		fprintf(stderr, "smtpd: TLS set-up with %s: %s\n", opt.cert, err);
		exit(1);
	}
	SSL_CTX_set_session_id_context(ssl_ctx, sid_ctx, sizeof sid_ctx - 1);
	SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_SERVER);
	if (opt.want_cert)
		SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, verify_any);
}

static void default_ext(void)
{
	char size[32];

	snprintf(size, sizeof size, "SIZE %ld", DEFAULT_SIZE);
	base.ext[base.n_ext++] = xstrndup("PIPELINING", 10);
	base.ext[base.n_ext++] = xstrndup(size, strlen(size));
	base.ext[base.n_ext++] = xstrndup("8BITMIME", 8);
	base.ext[base.n_ext++] = xstrndup("ENHANCEDSTATUSCODES", 19);
	if (opt.cert)
		base.ext[base.n_ext++] = xstrndup("STARTTLS", 8);
}

static void print_stats(const char *why)
{
	char line[256];

	snprintf(line, sizeof line,
		"STATS conns=%ld msgs=%ld rcpts=%ld tls=%ld resumed=%ld",
		atomic_load(&st_conns), atomic_load(&st_msgs),
		atomic_load(&st_rcpts), atomic_load(&st_tls),
		atomic_load(&st_resumed));
	if (why)
		rec_global("0 exit t=%ld reason=%s", t_rel(), why);
	rec_global("%s", line);
	printf("%s\n", line);
	fflush(stdout);
}

static void accept_on(struct listener *l, int lidx, long *conn_id)
{
	pthread_attr_t attr;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	while (l->fd >= 0) {
		struct sockaddr_storage ss, ls;
		socklen_t sl = sizeof ss, lsl = sizeof ls;
		struct conn *c;
		pthread_t th;
		int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		int one = 1;

		if (fd < 0)
			break;
		touch();
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		c = calloc(1, sizeof *c);
		if (c == NULL)
			die_nomem();
		c->fd = fd;
		c->id = ++*conn_id;
		c->n = ++l->accepted;
		c->lidx = lidx;
		c->sec = pick_section(lidx, c->n);
		c->group = 0;
		c->incap = IN_INIT;
		c->in = xrealloc(NULL, c->incap);
		sockname(&ss, c->peer, sizeof c->peer);
		getsockname(fd, (struct sockaddr *)&ls, &lsl);
		sockname(&ls, c->local, sizeof c->local);
		if (l->max && l->accepted >= l->max) {
			/* before this connection starts: refused from now on
			 * (the port stays ours: bound, not listening) */
			close(l->fd);
			l->refuse = 1;
			l->fd = open_one(l, l->port, 1);
			rec_global("0 unlisten listener=%d after=%ld", lidx,
				l->accepted);
		}
		atomic_fetch_add(&st_conns, 1);
		atomic_fetch_add(&live_threads, 1);
		conn_link(c);
		if (pthread_create(&th, &attr, conn_thread, c) != 0) {
			conn_unlink(c);
			atomic_fetch_sub(&live_threads, 1);
			rec_global("%ld open-failed reason=thread", c->id);
			free(c->in);
			free(c);
			close(fd);
		}
		if (l->refuse)
			break;
	}
	pthread_attr_destroy(&attr);
}

int main(int argc, char **argv)
{
	struct pollfd pfd[MAX_LISTEN + 1];
	sigset_t sigs;
	int sfd, ch;
	long conn_id = 0;
	const char *why = "idle";

	while ((ch = getopt(argc, argv, "l:p:s:r:Bd:c:k:T:Ct:n:h")) != -1) {
		switch (ch) {
		case 'l': parse_listener(optarg); break;
		case 'p': opt.port = atoi(optarg); break;
		case 's': opt.script = optarg; break;
		case 'r': opt.record = optarg; break;
		case 'B': opt.brief = 1; break;
		case 'd': opt.datadir = optarg; break;
		case 'c': opt.cert = optarg; break;
		case 'k': opt.key = optarg; break;
		case 'T':
			if (strcmp(optarg, "1.2") == 0)
				opt.tls_max = TLS1_2_VERSION;
			else if (strcmp(optarg, "1.3") == 0)
				opt.tls_max = TLS1_3_VERSION;
			else
				usage();
			break;
		case 'C': opt.want_cert = 1; break;
		case 't': opt.idle = atoi(optarg); break;
		case 'n': opt.hostname = optarg; break;
		default: usage();
		}
	}
	if (optind != argc || opt.port < 0 || opt.port > 65535 || opt.idle < 0)
		usage();
	if (n_listeners == 0)
		parse_listener("127.0.0.1");
	t_start = now_ms();
	touch();
	default_ext();
	if (opt.script)
		script_load(opt.script);
	tls_init();
	md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sfd < 0) {
		perror("smtpd: signalfd");
		return 1;
	}
	if (opt.record) {
		rec_fd = open(opt.record, O_WRONLY | O_CREAT | O_APPEND |
			O_CLOEXEC, 0600);
		if (rec_fd < 0) {
			fprintf(stderr, "smtpd: %s: %s\n", opt.record,
				strerror(errno));
			return 1;
		}
	}
	open_listeners();
	printf("READY");
	for (int i = 0; i < n_listeners; i++) {
		printf(" %d", listeners[i].port);
		rec_global("0 listen listener=%d addr=%s%s%s:%d refuse=%d max=%ld",
			i + 1, listeners[i].family == AF_INET6 ? "[" : "",
			listeners[i].host,
			listeners[i].family == AF_INET6 ? "]" : "",
			listeners[i].port, listeners[i].refuse, listeners[i].max);
	}
	printf("\n");
	fflush(stdout);
	for (;;) {
		int np = 0, timeout = -1, r;

		for (int i = 0; i < n_listeners; i++) {
			pfd[np].fd = listeners[i].refuse ? -1 : listeners[i].fd;
			pfd[np].events = POLLIN;
			pfd[np++].revents = 0;
		}
		pfd[np].fd = sfd;
		pfd[np].events = POLLIN;
		pfd[np++].revents = 0;
		if (opt.idle > 0) {
			long left = atomic_load(&last_activity) +
				opt.idle * 1000L - (long)now_ms();

			if (left <= 0)
				break;
			timeout = (int)(left > 60000 ? 60000 : left);
		}
		r = poll(pfd, (nfds_t)np, timeout);
		if (r < 0 && errno != EINTR) {
			why = "poll-error";
			break;
		}
		if (r <= 0)
			continue;
		if (pfd[np - 1].revents & POLLIN) {
			struct signalfd_siginfo si;

			if (read(sfd, &si, sizeof si) == sizeof si) {
				if (si.ssi_signo == SIGUSR1) {
					print_stats(NULL);
				} else {
					why = si.ssi_signo == SIGTERM ? "term" :
						si.ssi_signo == SIGINT ? "int" : "hup";
					break;
				}
			}
		}
		for (int i = 0; i < n_listeners; i++)
			if (pfd[i].fd >= 0 && (pfd[i].revents & POLLIN))
				accept_on(&listeners[i], i + 1, &conn_id);
	}
	for (int i = 0; i < n_listeners; i++)
		if (listeners[i].fd >= 0)
			close(listeners[i].fd);
	close(sfd);
	conns_stop();
	print_stats(why);
	if (atomic_load(&live_threads) > 0)	/* stuck: they still use all */
		_exit(0);
	script_free();
	SSL_CTX_free(ssl_ctx);
	EVP_MD_free(md_sha256);
	if (rec_fd >= 0)
		close(rec_fd);
	return 0;
}
