/*
 * tests/test_qtop.c - qtop driven as a person would drive it: tmux with
 * its own server socket, a fixed size, TERM=screen, LANG=C.UTF-8 (or C)
 * and TZ=UTC runs tui/qtop on a test spool; send-keys types; capture-pane
 * reads the screen. Waits are bounded polls for the text that should
 * appear; the tmux server is killed at the end of every case (and at
 * the suite's clean-up, whatever happened).
 *
 * The spools are built through libq in this process (it is linked
 * statically into the test program): messages with exactly the sender,
 * recipients, sizes and flags a case needs (including a sender holding
 * escape sequences, which no submission path would accept), retry
 * records, wait entries, a held message lock. The spool handle is closed
 * before qtop runs, except where a case holds a lock on purpose. What a
 * case changes through qtop is then checked in the spool through libq.
 *
 * The live-delivery case runs qrun in the background against tests/smtpd
 * with a script that holds the reply to the final dot, and watches the
 * Sessions view show the connection and then drop it.
 *
 * Needs tmux (Debian package tmux) at test time.
 */
#include "config.h"
#include "tests/tlib.h"
#include "tests/tsrv.h"

#include "q/addr.h"
#include "q/hints.h"
#include "q/retry.h"
#include "q/spool.h"

#include <CUnit/CUnit.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 15000          /* bound of every wait for the screen */

/* ------------------------------------------------------------------ */
/* a test spool */

struct sp {
	char dir[PATH_MAX];
	char conf[PATH_MAX + 32];
	char spool[PATH_MAX + 32];
	struct q_spool *s;
};

/* One t_tmpdir for the suite (tlib keeps a per-process budget that
 * every suite shares), a numbered directory in it per case. */
static int sp_init(struct sp *p, const char *extra_conf)
{
	static char *suite_dir;
	static int ncase;
	char buf[8192];
	const char *err = NULL;

	memset(p, 0, sizeof(*p));
	if (suite_dir == NULL && (suite_dir = t_tmpdir()) == NULL)
		return -1;
	if (t_bin("qtop") == NULL)
		return -1;
	snprintf(p->dir, sizeof(p->dir), "%s/case%d", suite_dir, ++ncase);
	if (mkdir(p->dir, 0700) < 0)
		return -1;
	const char *d = p->dir;
	snprintf(p->conf, sizeof(p->conf), "%s/qkit.conf", d);
	snprintf(p->spool, sizeof(p->spool), "%s/spool", d);
	snprintf(buf, sizeof(buf), "spool_directory = %s\nprimary_hostname = client.test\n%s",
		 p->spool, extra_conf != NULL ? extra_conf : "");
	if (t_write_file(p->conf, buf) != 0)
		return -1;
	if (q_spool_open(p->spool, Q_SPOOL_CREATE, &p->s, &err) < 0) {
		fprintf(stderr, "test_qtop: %s\n", err);
		return -1;
	}
	return 0;
}

static void sp_close(struct sp *p)
{
	q_spool_close(&p->s);
}

static struct q_hints *sp_hints(struct sp *p)
{
	struct q_hints *h = NULL;
	const char *err = NULL;

	if (p->s == NULL && q_spool_open(p->spool, 0, &p->s, &err) < 0)
		return NULL;
	if (q_spool_hints(p->s, &h, &err) < 0) {
		fprintf(stderr, "test_qtop: hints: %s\n", err);
		return NULL;
	}
	return h;
}

/* A message; body is plain text (LF), made canonical here. */
static int sp_msg(struct sp *p, const char *sender, const char *rcpts, const char *body,
		  unsigned flags, char id[Q_ID_LEN + 1])
{
	struct q_buf data = { 0 };
	const char *err = NULL, *r[8];
	char copy[512], *save = NULL, *tok;
	struct q_newmsg m;
	size_t n = 0;
	int rc;

	snprintf(copy, sizeof(copy), "%s", rcpts);
	for (tok = strtok_r(copy, " ", &save); tok != NULL && n < 8;
	     tok = strtok_r(NULL, " ", &save))
		r[n++] = tok;
	if (q_msg_canonicalize(body, strlen(body), &data, &err) < 0)
		return -1;
	if (p->s == NULL && q_spool_open(p->spool, 0, &p->s, &err) < 0)
		return -1;
	memset(&m, 0, sizeof(m));
	m.sender = sender;
	m.rcpts = r;
	m.nrcpt = n;
	m.data = data.data;
	m.len = data.len;
	m.flags = flags;
	rc = q_spool_create(p->s, &m, 0, id, &err);
	if (rc < 0)
		fprintf(stderr, "test_qtop: create: %s\n", err);
	q_buf_free(&data);
	return rc;
}

/* Read a message: 0 (and its flags), Q_NOTFOUND, -1. */
static int sp_flags(struct sp *p, const char *id, unsigned *flags)
{
	struct q_env *env = NULL;
	const char *err = NULL;
	int rc;

	if (p->s == NULL && q_spool_open(p->spool, 0, &p->s, &err) < 0)
		return -1;
	rc = q_spool_read(p->s, id, &env, &err);
	if (rc == 0)
		*flags = env->flags;
	q_env_free(&env);
	return rc;
}

/* ------------------------------------------------------------------ */
/* tmux */

static char tm_sock[64];
static bool tm_up;
static int tm_count;

static int tmux_v(struct t_out *o, const char *const args[])
{
	const char *argv[64];
	const char *env[] = { "LANG=C.UTF-8", "TZ=UTC", "TMUX=", NULL };
	int n = 0, rc;

	argv[n++] = "tmux";
	argv[n++] = "-L";
	argv[n++] = tm_sock;
	argv[n++] = "-f";
	argv[n++] = "/dev/null";
	for (int i = 0; args[i] != NULL && n < 63; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	rc = t_run_env(argv, env, NULL, o);
	return rc == 0 ? o->status : -1;
}

static int tmux(const char *a0, ...)
{
	const char *args[60];
	struct t_out o = { 0 };
	va_list ap;
	int n = 0, rc;

	args[n++] = a0;
	va_start(ap, a0);
	while (n < 59 && (args[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	args[n] = NULL;
	rc = tmux_v(&o, args);
	t_out_free(&o);
	return rc;
}

static void tm_kill(void)
{
	if (tm_up) {
		tmux("kill-server", NULL);
		tm_up = false;
	}
}

/* Start qtop in a w x h window; lang "C.UTF-8" or "C"; no_color. */
static int tm_start(const struct sp *p, int w, int h, const char *lang, bool no_color)
{
	char ws[16], hs[16], lg[64];
	struct t_out o = { 0 };
	const char *args[32];
	int n = 0, rc;

	tm_kill();
	/* a new socket each time: a server being killed may still hold the
	   old one for a moment */
	snprintf(tm_sock, sizeof(tm_sock), "qkit-test-%ld-%d", (long)getpid(), ++tm_count);
	snprintf(ws, sizeof(ws), "%d", w);
	snprintf(hs, sizeof(hs), "%d", h);
	snprintf(lg, sizeof(lg), "LANG=%s", lang);
	args[n++] = "new-session";
	args[n++] = "-d";
	args[n++] = "-x";
	args[n++] = ws;
	args[n++] = "-y";
	args[n++] = hs;
	args[n++] = "-s";
	args[n++] = "qt";
	args[n++] = "--";
	args[n++] = "env";
	args[n++] = "TERM=screen";
	args[n++] = lg;
	args[n++] = "LC_ALL=";
	args[n++] = "TZ=UTC";
	args[n++] = no_color ? "NO_COLOR=1" : "NO_COLOR=";
	if ((args[n++] = t_bin("qtop")) == NULL)
		return -1;
	args[n++] = "-C";
	args[n++] = p->conf;
	args[n] = NULL;
	rc = tmux_v(&o, args);
	if (rc != 0)
		fprintf(stderr, "test_qtop: tmux new-session: %s%s\n", o.err ? o.err : "",
			o.out ? o.out : "");
	t_out_free(&o);
	tm_up = rc == 0;
	return rc;
}

/* The screen, malloc'd ("" when it cannot be read). */
static char *tm_screen(void)
{
	const char *args[] = { "capture-pane", "-p", "-t", "qt", NULL };
	struct t_out o = { 0 };
	char *s;

	if (tmux_v(&o, args) != 0 || o.out == NULL) {
		t_out_free(&o);
		return strdup("");
	}
	s = o.out;
	o.out = NULL;
	t_out_free(&o);
	return s;
}

static void nap(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Wait until the screen contains every one of the texts (NULL-ended);
 * returns the screen (malloc'd), or NULL after WAIT_MS (the last screen
 * is printed on stderr, to see what was there). */
static char *tm_wait(const char *t0, ...)
{
	const char *want[16];
	char *s = NULL;
	va_list ap;
	int n = 0;

	want[n++] = t0;
	va_start(ap, t0);
	while (n < 15 && (want[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	for (int waited = 0; waited <= WAIT_MS; waited += 50) {
		bool all = true;

		free(s);
		s = tm_screen();
		for (int i = 0; i < n; i++)
			if (strstr(s, want[i]) == NULL)
				all = false;
		if (all)
			return s;
		nap(50);
	}
	fprintf(stderr, "\ntest_qtop: waited for \"%s\"%s; the screen was:\n%s\n", want[0],
		n > 1 ? " (and more)" : "", s);
	free(s);
	return NULL;
}

/* Wait until the screen no longer contains text, and does contain
 * every one of the others (NULL-ended; a screen being redrawn is not
 * taken for the result). */
static char *tm_wait_gone(const char *text, ...)
{
	const char *want[16];
	char *s = NULL;
	va_list ap;
	int n = 0;

	va_start(ap, text);
	while (n < 15 && (want[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	for (int waited = 0; waited <= WAIT_MS; waited += 50) {
		bool ok;

		free(s);
		s = tm_screen();
		ok = strstr(s, text) == NULL;
		for (int i = 0; i < n && ok; i++)
			if (strstr(s, want[i]) == NULL)
				ok = false;
		if (ok)
			return s;
		nap(50);
	}
	fprintf(stderr, "\ntest_qtop: waited for \"%s\" to go; the screen was:\n%s\n",
		text, s);
	free(s);
	return NULL;
}

static void keys(const char *k0, ...)
{
	const char *args[40];
	struct t_out o = { 0 };
	va_list ap;
	int n = 0;

	args[n++] = "send-keys";
	args[n++] = "-t";
	args[n++] = "qt";
	args[n++] = k0;
	va_start(ap, k0);
	while (n < 39 && (args[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	args[n] = NULL;
	tmux_v(&o, args);
	t_out_free(&o);
}

/* Literal text (send-keys -l). */
static void type(const char *text)
{
	const char *args[] = { "send-keys", "-t", "qt", "-l", "--", text, NULL };
	struct t_out o = { 0 };

	tmux_v(&o, args);
	t_out_free(&o);
}

/* The line of the screen holding text (a copy), or "". */
static char *line_with(const char *screen, const char *text)
{
	static char line[1024];
	const char *p = screen != NULL ? strstr(screen, text) : NULL;
	const char *b, *e;

	line[0] = '\0';
	if (p == NULL)
		return line;
	for (b = p; b > screen && b[-1] != '\n'; b--)
		;
	e = strchr(p, '\n');
	snprintf(line, sizeof(line), "%.*s", (int)(e != NULL ? e - b : (long)strlen(b)), b);
	return line;
}

/* Position of text in the screen (for order checks), or -1. */
static long pos(const char *screen, const char *text)
{
	const char *p = screen != NULL ? strstr(screen, text) : NULL;

	return p != NULL ? (long)(p - screen) : -1;
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		if (*s == '\n')
			n++;
	return n;
}

static int longest_line(const char *s)
{
	int best = 0, cur = 0;

	for (; *s; s++) {
		if (*s == '\n') {
			if (cur > best)
				best = cur;
			cur = 0;
		} else if (((unsigned char)*s & 0xC0) != 0x80) {
			cur++;
		}
	}
	return cur > best ? cur : best;
}

/* qtop's output streams, "" when there were none */
#define OUT(o) ((o).out != NULL ? (o).out : "")
#define ERR(o) ((o).err != NULL ? (o).err : "")

static int run_qtop(struct t_out *o, const char *a1, const char *a2, const char *a3)
{
	const char *argv[] = { t_bin("qtop"), a1, a2, a3, NULL };

	memset(o, 0, sizeof(*o));
	if (argv[0] == NULL)
		return -1;
	return t_run(argv, NULL, o) == 0 ? o->status : -1;
}

/* A typical spool: three messages, the first frozen. */
struct three {
	char a[Q_ID_LEN + 1], b[Q_ID_LEN + 1], c[Q_ID_LEN + 1];
};

static int mk_three(struct sp *p, struct three *t)
{
	if (sp_msg(p, "alice@example.org", "bob@one.test", "Subject: first\n\nhello\n",
		   Q_ENV_FROZEN, t->a) < 0 ||
	    sp_msg(p, "carol@example.org", "dave@two.test erin@one.test",
		   "Subject: second\n\nsecond body line\nmore text to be bigger than the others"
		   " by a good margin, so that sorting by size puts it first\n", 0, t->b) < 0 ||
	    sp_msg(p, "bob@example.org", "frank@three.test", "Subject: third\n\nhi\n", 0,
		   t->c) < 0)
		return -1;
	return 0;
}

/* ------------------------------------------------------------------ */
/* cases */

static void test_once(void)
{
	struct sp p;
	struct three t;
	struct t_out o = { 0 };
	char missing[PATH_MAX + 64];

	CU_ASSERT_FATAL(sp_init(&p, NULL) == 0);
	CU_ASSERT_FATAL(mk_three(&p, &t) == 0);
	sp_close(&p);

	CU_ASSERT_EQUAL(run_qtop(&o, "-C", p.conf, "--once"), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(OUT(o), "3 messages, 1 frozen, 0 deferred"));
	CU_ASSERT_PTR_NOT_NULL(strstr(OUT(o), "0 sessions"));
	CU_ASSERT_PTR_NOT_NULL(strstr(OUT(o), p.spool));
	CU_ASSERT_EQUAL(count_lines(OUT(o)), 1);
	t_out_free(&o);

	CU_ASSERT_EQUAL(run_qtop(&o, "--help", NULL, NULL), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(OUT(o), "--once"));
	t_out_free(&o);
	CU_ASSERT_EQUAL(run_qtop(&o, "--version", NULL, NULL), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(OUT(o), "qtop (qkit)"));
	t_out_free(&o);
	CU_ASSERT_EQUAL(run_qtop(&o, "--bogus", NULL, NULL), 64);
	t_out_free(&o);
	CU_ASSERT_EQUAL(run_qtop(&o, "-C", p.conf, "stray"), 64);
	t_out_free(&o);
	/* not a terminal, and no --once: says how to get the summary */
	CU_ASSERT_EQUAL(run_qtop(&o, "-C", p.conf, NULL), 64);
	CU_ASSERT_PTR_NOT_NULL(strstr(ERR(o), "--once"));
	t_out_free(&o);
	/* a spool that does not exist */
	snprintf(missing, sizeof(missing), "%s/other.conf", p.dir);
	t_write_file(missing, "spool_directory = /nonexistent/qkit-test\n");
	CU_ASSERT_EQUAL(run_qtop(&o, "-C", missing, "--once"), 66);
	t_out_free(&o);
	/* --bench-refresh runs without a terminal */
	CU_ASSERT_EQUAL(run_qtop(&o, "-C", p.conf, "--bench-refresh=2"), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(OUT(o), "3 messages in the index"));
	CU_ASSERT_PTR_NOT_NULL(strstr(OUT(o), "ms CPU"));
	t_out_free(&o);
}

static void test_queue_view(void)
{
	struct sp p;
	struct three t;
	char *s, *l;

	CU_ASSERT_FATAL(sp_init(&p, NULL) == 0);
	CU_ASSERT_FATAL(mk_three(&p, &t) == 0);
	sp_close(&p);
	CU_ASSERT_FATAL(tm_start(&p, 100, 30, "C.UTF-8", false) == 0);
	s = tm_wait("Queue 3", t.a, t.b, t.c, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL) {
		/* the summary line */
		CU_ASSERT_PTR_NOT_NULL(strstr(s, "3 msgs"));
		CU_ASSERT_PTR_NOT_NULL(strstr(s, "1 frozen"));
		CU_ASSERT_PTR_NOT_NULL(strstr(line_with(s, "3 msgs"), "/spool"));
		CU_ASSERT(strncmp(s, "qtop", 4) == 0);
		/* each message: sender, first recipient, how many more, state */
		l = line_with(s, t.a);
		CU_ASSERT_PTR_NOT_NULL(strstr(l, "alice@example.org"));
		CU_ASSERT_PTR_NOT_NULL(strstr(l, "bob@one.test"));
		CU_ASSERT_PTR_NOT_NULL(strstr(l, "frozen"));
		l = line_with(s, t.b);
		CU_ASSERT_PTR_NOT_NULL(strstr(l, "carol@example.org"));
		CU_ASSERT_PTR_NOT_NULL(strstr(l, "dave@two.test +1"));
		CU_ASSERT_PTR_NOT_NULL(strstr(l, "due"));
		/* arrival order */
		CU_ASSERT(pos(s, t.a) < pos(s, t.b) && pos(s, t.b) < pos(s, t.c));
		/* the other views' tabs, the key hints */
		CU_ASSERT_PTR_NOT_NULL(strstr(s, "2 Retry 0"));
		CU_ASSERT_PTR_NOT_NULL(strstr(s, "3 Sessions 0"));
		CU_ASSERT_PTR_NOT_NULL(strstr(s, "? help"));
	}
	free(s);

	/* the message pager: envelope, recipients, header, log, body */
	keys("Down", "Enter", NULL);
	s = tm_wait("Message ", "Envelope", "carol@example.org", "Subject: second",
		    "Recipients: 2 (2 pending", "second body line", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("l", NULL);
	s = tm_wait("Message log", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("q", NULL);
	s = tm_wait("Queue 3", "A S F D sort", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);

	/* per-domain summary (the one.test line waited for whole: a screen
	   captured while the view is drawn may hold the name only) */
	keys("s", NULL);
	s = tm_wait("DOMAIN", "one.test", "two.test", "three.test", NULL);
	for (int tries = 0; s != NULL && tries < WAIT_MS / 50 &&
	     strstr(line_with(s, "one.test"), " 2 ") == NULL; tries++) {
		free(s);
		nap(50);
		s = tm_wait("DOMAIN", "one.test", "two.test", "three.test", NULL);
	}
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL) {
		l = line_with(s, "one.test");
		CU_ASSERT_PTR_NOT_NULL(strstr(l, " 2 "));     /* two messages */
		if (strstr(l, " 2 ") == NULL)
			fprintf(stderr, "\ntest_qtop: the one.test line: %s\n", l);
		CU_ASSERT(pos(s, "one.test") < pos(s, "two.test"));
	}
	free(s);
	/* Enter on a domain filters the queue by it */
	keys("Enter", NULL);
	s = tm_wait("Queue 2/3", "filter: @one.test", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL)
		CU_ASSERT_PTR_NULL(strstr(s, t.c));
	free(s);

	/* views: Tab, the numbers, the help, quit */
	keys("Escape", "Tab", NULL);
	s = tm_wait("no retry records", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("3", NULL);
	s = tm_wait("no live sessions", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("?", NULL);
	s = tm_wait("Everywhere", "deliver now", "retry now", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("Escape", NULL);       /* any key closes the help */
	s = tm_wait_gone("Everywhere", "Sessions", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("1", NULL);
	s = tm_wait("Queue 3", t.c, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("q", NULL);
	for (int i = 0; i < 100 && tmux("has-session", "-t", "qt", NULL) == 0; i++)
		nap(50);
	CU_ASSERT_NOT_EQUAL(tmux("has-session", "-t", "qt", NULL), 0);
	tm_kill();
}

static void test_sort_filter(void)
{
	struct sp p;
	struct three t;
	char *s;

	CU_ASSERT_FATAL(sp_init(&p, NULL) == 0);
	CU_ASSERT_FATAL(mk_three(&p, &t) == 0);
	sp_close(&p);
	CU_ASSERT_FATAL(tm_start(&p, 100, 30, "C.UTF-8", false) == 0);
	s = tm_wait("Queue 3", t.c, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);

	/* size: the largest first */
	keys("S", NULL);
	s = tm_wait("sort: size (largest first)", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL)
		CU_ASSERT(pos(s, t.b) < pos(s, t.a) && pos(s, t.b) < pos(s, t.c));
	free(s);
	/* sender: alice, bob, carol; again: reversed */
	keys("F", NULL);
	s = tm_wait("sort: sender (a-z)", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL)
		CU_ASSERT(pos(s, t.a) < pos(s, t.c) && pos(s, t.c) < pos(s, t.b));
	free(s);
	keys("F", NULL);
	s = tm_wait("sort: sender (z-a)", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL)
		CU_ASSERT(pos(s, t.b) < pos(s, t.c) && pos(s, t.c) < pos(s, t.a));
	free(s);
	/* domain: one.test (a), then three.test (c), two.test (b) */
	keys("D", NULL);
	s = tm_wait("sort: domain (a-z)", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL)
		CU_ASSERT(pos(s, t.a) < pos(s, t.c) && pos(s, t.c) < pos(s, t.b));
	free(s);
	keys("A", NULL);
	s = tm_wait("sort: age (oldest first)", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);

	/* incremental filter: by sender, by recipient, by id; Esc clears */
	keys("/", NULL);
	type("caro");
	s = tm_wait("Queue 1/3", "filter: caro", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL) {
		CU_ASSERT_PTR_NOT_NULL(strstr(s, t.b));
		CU_ASSERT_PTR_NULL(strstr(s, t.a));
	}
	free(s);
	keys("Enter", NULL);
	s = tm_wait("1 message match", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("Escape", NULL);
	s = tm_wait("Queue 3", "filter cleared", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("/", NULL);
	type("frank@");
	keys("Enter", NULL);
	s = tm_wait("Queue 1/3", t.c, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("/", "C-u", NULL);
	type(t.a + 6);      /* a part of the id */
	keys("Enter", NULL);
	s = tm_wait("Queue 1/3", t.a, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("/", "C-u", NULL);
	type("nothing-matches-this");
	s = tm_wait("Queue 0/3", "no message matches", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("Escape", NULL);     /* leaves the input, back to the old filter */
	s = tm_wait("Queue 1/3", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	tm_kill();
}

static void test_actions(void)
{
	struct sp p;
	struct three t;
	unsigned fl = 0;
	char *s, q[128];

	CU_ASSERT_FATAL(sp_init(&p, NULL) == 0);
	CU_ASSERT_FATAL(mk_three(&p, &t) == 0);
	sp_close(&p);
	CU_ASSERT_FATAL(tm_start(&p, 100, 30, "C.UTF-8", true) == 0);
	s = tm_wait("Queue 3", t.c, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);

	/* thaw the first (frozen) one */
	keys("t", NULL);
	snprintf(q, sizeof(q), "%s thawed", t.a);
	s = tm_wait(q, "0 frozen", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	CU_ASSERT_EQUAL(sp_flags(&p, t.a, &fl), 0);
	CU_ASSERT_EQUAL(fl & Q_ENV_FROZEN, 0);
	/* thawing it again changes nothing and says so */
	keys("t", NULL);
	s = tm_wait("1 not frozen", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);

	/* mark the second and third, freeze both */
	keys("Down", "Space", "Space", NULL);
	s = tm_wait("2 marked", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("f", NULL);
	s = tm_wait("frozen: 2 messages", "2 frozen", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	CU_ASSERT_EQUAL(sp_flags(&p, t.b, &fl), 0);
	CU_ASSERT(fl & Q_ENV_FROZEN);
	CU_ASSERT_EQUAL(sp_flags(&p, t.c, &fl), 0);
	CU_ASSERT(fl & Q_ENV_FROZEN);
	CU_ASSERT_EQUAL(sp_flags(&p, t.a, &fl), 0);
	CU_ASSERT_EQUAL(fl & Q_ENV_FROZEN, 0);
	keys("u", NULL);
	s = tm_wait("no message marked", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);

	/* remove asks first; n keeps the message */
	keys("Home", "x", NULL);
	snprintf(q, sizeof(q), "Remove message %s?", t.a);
	s = tm_wait(q, "(y/n)", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("n", NULL);
	s = tm_wait("cancelled", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	CU_ASSERT_EQUAL(sp_flags(&p, t.a, &fl), 0);
	/* y removes it */
	keys("x", NULL);
	s = tm_wait(q, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("y", NULL);
	snprintf(q, sizeof(q), "%s removed", t.a);
	s = tm_wait(q, "Queue 2", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	CU_ASSERT_EQUAL(sp_flags(&p, t.a, &fl), Q_NOTFOUND);
	/* a removal of everything shown says how many */
	keys("a", "x", NULL);
	s = tm_wait("Remove 2 messages?", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("y", NULL);
	s = tm_wait("removed: 2 messages", "the queue is empty", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	CU_ASSERT_EQUAL(sp_flags(&p, t.b, &fl), Q_NOTFOUND);
	CU_ASSERT_EQUAL(sp_flags(&p, t.c, &fl), Q_NOTFOUND);
	sp_close(&p);
	tm_kill();
}

/* A message locked by another process (a delivery) is reported busy and
 * left alone. */
static void test_busy(void)
{
	struct sp p;
	struct three t;
	struct q_msg *m = NULL;
	unsigned fl = 0;
	char *s;

	CU_ASSERT_FATAL(sp_init(&p, NULL) == 0);
	CU_ASSERT_FATAL(mk_three(&p, &t) == 0);
	CU_ASSERT_FATAL(q_msg_lock(p.s, t.b, &m, NULL) == 0);
	CU_ASSERT_FATAL(tm_start(&p, 100, 30, "C.UTF-8", false) == 0);
	s = tm_wait("Queue 3", t.b, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("Down", "f", NULL);
	s = tm_wait("1 busy (being delivered): not changed", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("x", NULL);
	s = tm_wait("(y/n)", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("y", NULL);
	s = tm_wait("removed: 0 messages; 1 busy", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	q_msg_unlock(&m);
	CU_ASSERT_EQUAL(sp_flags(&p, t.b, &fl), 0);
	CU_ASSERT_EQUAL(fl & Q_ENV_FROZEN, 0);
	sp_close(&p);
	tm_kill();
}

static void test_retry(void)
{
	struct sp p;
	struct three t;
	struct q_hints *h;
	struct q_retry_rec rec;
	struct q_index_rec ir;
	struct q_msg *m = NULL;
	time_t now = time(NULL);
	char *s, *l;

	CU_ASSERT_FATAL(sp_init(&p, NULL) == 0);
	CU_ASSERT_FATAL(mk_three(&p, &t) == 0);
	CU_ASSERT_FATAL((h = sp_hints(&p)) != NULL);
	CU_ASSERT_FATAL(q_retry_fail(h, "T:mx.one.test:192.0.2.7", q_retry_default_rule(),
				     0, "refused", 0, ECONNREFUSED,
				     "connection refused by 192.0.2.7 port 25", now - 600,
				     NULL, NULL) == 0);
	CU_ASSERT_FATAL(q_retry_fail(h, "T:mx.two.test:192.0.2.9:2525",
				     q_retry_default_rule(), 0, "mail_4xx", 451, 0,
				     "451 4.3.0 \x1b[2Jtry \x1b]0;owned\x07later", now - 60,
				     NULL, NULL) == 0);
	CU_ASSERT_FATAL(q_retry_fail(h, "R:three.test", q_retry_default_rule(), 0, "lookup",
				     0, 0, "DNS temporarily failing", now - 30, NULL,
				     NULL) == 0);
	/* b waits for mx.one.test, and is not due before an hour */
	CU_ASSERT_FATAL(q_wait_add(h, "mx.one.test", t.b, NULL) == 0);
	CU_ASSERT_FATAL(q_msg_lock(p.s, t.b, &m, NULL) == 0);
	CU_ASSERT_FATAL(q_msg_commit(m, now + 3600, NULL) == 0);
	q_msg_unlock(&m);
	sp_close(&p);

	CU_ASSERT_FATAL(tm_start(&p, 120, 30, "C.UTF-8", false) == 0);
	s = tm_wait("Queue 3", "Retry 3", "1 deferred", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL)
		CU_ASSERT_PTR_NOT_NULL(strstr(line_with(s, t.b), "in 60m"));
	free(s);
	keys("2", NULL);
	s = tm_wait("T:mx.one.test:192.0.2.7", "R:three.test", "T:mx.two.test", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL) {
		l = line_with(s, "T:mx.one.test");
		CU_ASSERT_PTR_NOT_NULL(strstr(l, "refused"));
		CU_ASSERT_PTR_NOT_NULL(strstr(l, "192.0.2.7"));
		CU_ASSERT_PTR_NOT_NULL(strstr(l, "connection refused"));
		l = line_with(s, "T:mx.two.test");
		CU_ASSERT_PTR_NOT_NULL(strstr(l, "mail_4xx 451"));
		/* a server's escape sequences are shown escaped */
		CU_ASSERT_PTR_NOT_NULL(strstr(l, "\\x1b[2Jtry"));
		/* the detail pane: the first record (by key), who waits for it */
		CU_ASSERT_PTR_NOT_NULL(strstr(s, "routing retry for the domain three.test"));
	}
	free(s);
	s = tm_wait("waiting: 1 message", t.c, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("Down", NULL);
	s = tm_wait("host mx.one.test   IP 192.0.2.7   port 25", "waiting: 1 message", t.b,
		    NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	/* the title of the window was not set by the record's text */
	{
		const char *args[] = { "display-message", "-p", "-t", "qt", "#{pane_title}",
				       NULL };
		struct t_out o = { 0 };

		CU_ASSERT_EQUAL(tmux_v(&o, args), 0);
		CU_ASSERT_PTR_NULL(strstr(o.out ? o.out : "", "owned"));
		t_out_free(&o);
	}
	/* sort by next try, filter */
	keys("/", NULL);
	type("451");
	keys("Enter", NULL);
	s = tm_wait("Retry 1/3", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL)
		CU_ASSERT_PTR_NULL(strstr(s, "R:three.test"));
	free(s);
	keys("Escape", NULL);
	s = tm_wait("Retry 3", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);

	/* retry now: the record goes, the waiting message becomes due */
	keys("Home", "Down", "r", NULL);
	s = tm_wait("retry now: 1 record cleared; 1 waiting message made due", "Retry 2",
		    NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	CU_ASSERT_FATAL((h = sp_hints(&p)) != NULL);
	memset(&rec, 0, sizeof(rec));
	CU_ASSERT_EQUAL(q_retry_get(h, "T:mx.one.test:192.0.2.7", &rec, NULL), Q_NOTFOUND);
	q_retry_rec_clear(&rec);
	memset(&ir, 0, sizeof(ir));
	CU_ASSERT_EQUAL(q_index_get(h, t.b, &ir, NULL), 0);
	CU_ASSERT_EQUAL(ir.next_try, 0);
	q_index_rec_clear(&ir);
	sp_close(&p);

	/* delete asks first */
	keys("Home", "x", NULL);
	s = tm_wait("Delete the retry record R:three.test?", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("y", NULL);
	s = tm_wait("deleted 1 retry record", "Retry 1", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	CU_ASSERT_FATAL((h = sp_hints(&p)) != NULL);
	memset(&rec, 0, sizeof(rec));
	CU_ASSERT_EQUAL(q_retry_get(h, "R:three.test", &rec, NULL), Q_NOTFOUND);
	CU_ASSERT_EQUAL(q_retry_get(h, "T:mx.two.test:192.0.2.9:2525", &rec, NULL), 0);
	q_retry_rec_clear(&rec);
	sp_close(&p);
	tm_kill();
}

/* Escape sequences in a sender never reach the terminal; UTF-8 is shown
 * as UTF-8 in a UTF-8 locale and escaped in the C locale. */
static void test_escape(void)
{
	static const char evil[] = "\x1b[31mevil\x1b]2;pwned\x07@x.test";
	struct sp p;
	char id1[Q_ID_LEN + 1], id2[Q_ID_LEN + 1], *s;

	CU_ASSERT_FATAL(sp_init(&p, NULL) == 0);
	CU_ASSERT_FATAL(sp_msg(&p, evil, "victim@one.test",
			       "Subject: \x1b[1mbold\x1b[0m \xe2\x80\xae reversed\n\n"
			       "body \x1b[2J here\n", 0, id1) == 0);
	CU_ASSERT_FATAL(sp_msg(&p, "jos\xc3\xa9@example.org", "u@one.test", "Subject: x\n\nx\n",
			       0, id2) == 0);
	sp_close(&p);

	CU_ASSERT_FATAL(tm_start(&p, 100, 30, "C.UTF-8", false) == 0);
	s = tm_wait("Queue 2", id1, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL) {
		CU_ASSERT_PTR_NOT_NULL(strstr(line_with(s, id1), "\\x1b[31mevil\\x1b]2;"));
		CU_ASSERT_PTR_NOT_NULL(strstr(s, "jos\xc3\xa9@example.org"));
	}
	free(s);
	{
		const char *args[] = { "display-message", "-p", "-t", "qt", "#{pane_title}",
				       NULL };
		struct t_out o = { 0 };

		CU_ASSERT_EQUAL(tmux_v(&o, args), 0);
		CU_ASSERT_PTR_NULL(strstr(o.out ? o.out : "", "pwned"));
		t_out_free(&o);
	}
	/* in the pager: the header and the body, and a bidi override */
	keys("Enter", NULL);
	s = tm_wait("Sender      <\\x1b[31mevil\\x1b]2;pwned\\x07@x.test>",
		    "Subject: \\x1b[1mbold\\x1b[0m", "body \\x1b[2J here", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL)
		CU_ASSERT_PTR_NOT_NULL(strstr(s, "\\xe2\\x80\\xae reversed"));
	free(s);
	tm_kill();

	/* the C locale: only ASCII reaches the terminal; NO_COLOR */
	CU_ASSERT_FATAL(tm_start(&p, 100, 30, "C", true) == 0);
	s = tm_wait("Queue 2", "jos\\xc3\\xa9@example.org", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	tm_kill();
}

static void test_resize(void)
{
	struct sp p;
	struct three t;
	char *s;

	CU_ASSERT_FATAL(sp_init(&p, NULL) == 0);
	CU_ASSERT_FATAL(mk_three(&p, &t) == 0);
	sp_close(&p);
	CU_ASSERT_FATAL(tm_start(&p, 100, 30, "C.UTF-8", false) == 0);
	s = tm_wait("Queue 3", "SIZE", "RECIPIENT", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);

	CU_ASSERT_EQUAL(tmux("resize-window", "-t", "qt", "-x", "60", "-y", "20", NULL), 0);
	s = tm_wait_gone("SIZE", "1 Queue 3", t.c, "? help", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL) {
		char *last = s + strlen(s);

		CU_ASSERT_EQUAL(count_lines(s), 20);
		CU_ASSERT(longest_line(s) <= 60);
		/* the top line, the tabs, the column header, the rows, the hints */
		CU_ASSERT(strncmp(s, "qtop", 4) == 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(s, "1 Queue 3"));
		CU_ASSERT_PTR_NOT_NULL(strstr(s, "AGE"));
		CU_ASSERT_PTR_NOT_NULL(strstr(s, t.a));
		CU_ASSERT_PTR_NOT_NULL(strstr(s, t.c));
		while (last > s && last[-1] == '\n')
			last--;
		while (last > s && last[-1] != '\n')
			last--;
		CU_ASSERT(strncmp(last, "? help", 6) == 0);
	}
	free(s);
	/* other views and the help fit too */
	keys("2", NULL);
	s = tm_wait("no retry records", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL)
		CU_ASSERT(longest_line(s) <= 60);
	free(s);
	keys("1", NULL);
	CU_ASSERT_EQUAL(tmux("resize-window", "-t", "qt", "-x", "100", "-y", "30", NULL), 0);
	s = tm_wait("SIZE", "RECIPIENT", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL) {
		CU_ASSERT_EQUAL(count_lines(s), 30);
		CU_ASSERT(strncmp(s, "qtop", 4) == 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(s, "3 msgs"));
		CU_ASSERT_PTR_NOT_NULL(strstr(s, t.b));
	}
	free(s);
	/* too small: says so, and comes back */
	CU_ASSERT_EQUAL(tmux("resize-window", "-t", "qt", "-x", "20", "-y", "5", NULL), 0);
	s = tm_wait("too small", "q quits", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	CU_ASSERT_EQUAL(tmux("resize-window", "-t", "qt", "-x", "80", "-y", "24", NULL), 0);
	s = tm_wait("Queue 3", t.c, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL)
		CU_ASSERT_EQUAL(count_lines(s), 24);
	free(s);
	tm_kill();
}

/* ---- with qrun and tests/smtpd ---- */

struct srv {
	pid_t pid;
	char out[PATH_MAX + 32], rec[PATH_MAX + 32];
	unsigned port;
};

static int srv_start(struct srv *v, const struct sp *p, const char *script)
{
	char sc[PATH_MAX + 32], rest[128];
	const char *argv[16];
	int n = 0;

	memset(v, 0, sizeof(*v));
	snprintf(v->out, sizeof(v->out), "%s/smtpd.out", p->dir);
	snprintf(v->rec, sizeof(v->rec), "%s/smtpd.rec", p->dir);
	argv[n++] = t_bin("smtpd");
	argv[n++] = "-p";
	argv[n++] = "0";
	argv[n++] = "-t";
	argv[n++] = "30";
	argv[n++] = "-r";
	argv[n++] = v->rec;
	if (script != NULL) {
		snprintf(sc, sizeof(sc), "%s/smtpd.script", p->dir);
		if (t_write_file(sc, script) != 0)
			return -1;
		argv[n++] = "-s";
		argv[n++] = sc;
	}
	argv[n] = NULL;
	if (argv[0] == NULL)
		return -1;
	v->pid = ts_spawn(argv, NULL, v->out);
	if (v->pid <= 0)
		return -1;
	if (ts_wait_line(v->out, "READY ", 10000, rest, sizeof(rest)) != 0) {
		ts_stop(v->pid);
		return -1;
	}
	v->port = (unsigned)strtoul(rest, NULL, 10);
	return v->port != 0 ? 0 : -1;
}

/* A spool routed to the server as mx.test (a hosts file). */
static int sp_routed(struct sp *p, const struct srv *v)
{
	char hosts[PATH_MAX + 32], buf[3 * PATH_MAX];

	snprintf(hosts, sizeof(hosts), "%s/hosts", p->dir);
	if (t_write_file(hosts, "127.0.0.1 mx.test\n") != 0)
		return -1;
	snprintf(buf, sizeof(buf), "spool_directory = %s\nprimary_hostname = client.test\n"
		 "hosts_file = %s\nroute * = mx.test:%u\nfinal_timeout = 20s\n",
		 p->spool, hosts, v->port);
	return t_write_file(p->conf, buf);
}

static void test_live_session(void)
{
	struct sp p;
	struct srv v;
	char id[Q_ID_LEN + 1], *s, *l;
	const char *argv[5];
	char bgout[PATH_MAX + 32];
	pid_t qrun;
	int st = -1;

	CU_ASSERT_FATAL(sp_init(&p, NULL) == 0);
	CU_ASSERT_FATAL(srv_start(&v, &p, "dot: delay 4000\n") == 0);
	CU_ASSERT_FATAL(sp_routed(&p, &v) == 0);
	CU_ASSERT_FATAL(sp_msg(&p, "a@sender.test", "x@d.test", "Subject: live\n\nhi\n", 0,
			       id) == 0);
	sp_close(&p);
	CU_ASSERT_FATAL(tm_start(&p, 120, 30, "C.UTF-8", false) == 0);
	s = tm_wait("Queue 1", id, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("3", NULL);
	s = tm_wait("no live sessions", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);

	argv[0] = t_bin("qrun");
	argv[1] = "-C";
	argv[2] = p.conf;
	argv[3] = NULL;
	snprintf(bgout, sizeof(bgout), "%s/qrun.out", p.dir);
	qrun = ts_spawn(argv, NULL, bgout);
	CU_ASSERT_FATAL(qrun > 0);

	/* while the server sits on the final dot (4 s): the host, the
	   runner's protocol state for the transaction, the message */
	s = tm_wait("Sessions 1", "mx.test", " mail ", id, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL) {
		char pid[32], port[32];

		l = line_with(s, "mx.test");
		snprintf(pid, sizeof(pid), "%ld", (long)qrun);
		snprintf(port, sizeof(port), "127.0.0.1:%u", v.port);
		CU_ASSERT_PTR_NOT_NULL(strstr(l, pid));
		CU_ASSERT_PTR_NOT_NULL(strstr(l, port));
		CU_ASSERT_PTR_NOT_NULL(strstr(l, " mail "));
		CU_ASSERT_PTR_NOT_NULL(strstr(l, id));
		/* the summary counts it; the detail pane */
		CU_ASSERT_PTR_NOT_NULL(strstr(s, "1 sess"));
		CU_ASSERT_PTR_NOT_NULL(strstr(s, "TLS: no (clear text)"));
	}
	free(s);
	/* the queue shows the message being sent */
	keys("1", NULL);
	s = tm_wait("sending", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL)
		CU_ASSERT_PTR_NOT_NULL(strstr(line_with(s, id), "sending"));
	free(s);
	keys("3", NULL);

	/* done: the session goes, and so does the message */
	for (int i = 0; i < 600; i++) {
		if (waitpid(qrun, &st, WNOHANG) == qrun)
			break;
		nap(50);
	}
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	s = tm_wait("no live sessions", "Sessions 0", "Queue 0", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	/* the main log's delivery is counted for the last minute */
	s = tm_wait("1m: 1 ok 0 failed", NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	{
		struct t_out o = { 0 };

		CU_ASSERT_EQUAL(run_qtop(&o, "-C", p.conf, "--once"), 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(OUT(o), "0 messages"));
		CU_ASSERT_PTR_NOT_NULL(strstr(OUT(o), "last minute: 1 delivered, 0 failed"));
		t_out_free(&o);
	}
	ts_stop(v.pid);
	tm_kill();
}

static void test_deliver_now(void)
{
	struct sp p;
	struct srv v;
	char a[Q_ID_LEN + 1], b[Q_ID_LEN + 1], *s;
	struct q_msg *m = NULL;
	unsigned fl;

	CU_ASSERT_FATAL(sp_init(&p, NULL) == 0);
	CU_ASSERT_FATAL(srv_start(&v, &p, NULL) == 0);
	CU_ASSERT_FATAL(sp_routed(&p, &v) == 0);
	CU_ASSERT_FATAL(sp_msg(&p, "a@sender.test", "x@d.test", "Subject: one\n\n1\n", 0,
			       a) == 0);
	CU_ASSERT_FATAL(sp_msg(&p, "a@sender.test", "y@d.test", "Subject: two\n\n2\n", 0,
			       b) == 0);
	/* not due for an hour: deliver now does not care */
	CU_ASSERT_FATAL(q_msg_lock(p.s, a, &m, NULL) == 0);
	CU_ASSERT_FATAL(q_msg_commit(m, time(NULL) + 3600, NULL) == 0);
	q_msg_unlock(&m);
	sp_close(&p);
	CU_ASSERT_FATAL(tm_start(&p, 120, 30, "C.UTF-8", false) == 0);
	s = tm_wait("Queue 2", a, b, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	keys("d", NULL);
	s = tm_wait("deliver now: 1 message, 1 completed; recipients: 1 delivered", "Queue 1",
		    NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	if (s != NULL) {
		CU_ASSERT_PTR_NULL(strstr(s, a));
		CU_ASSERT_PTR_NOT_NULL(strstr(s, b));
	}
	free(s);
	CU_ASSERT_EQUAL(sp_flags(&p, a, &fl), Q_NOTFOUND);
	CU_ASSERT_EQUAL(sp_flags(&p, b, &fl), 0);
	sp_close(&p);
	CU_ASSERT_EQUAL(ts_count(v.rec, " msg "), 1);
	ts_stop(v.pid);
	tm_kill();
}

static int suite_clean(void)
{
	tm_kill();
	return 0;
}

void suite_qtop(void)
{
	CU_pSuite s = CU_add_suite("qtop", NULL, suite_clean);

	CU_add_test(s, "--once, options, exit codes", test_once);
	CU_add_test(s, "queue view, pager, domains, views, help, quit", test_queue_view);
	CU_add_test(s, "sort and filter", test_sort_filter);
	CU_add_test(s, "freeze, thaw, marks, remove with confirmation", test_actions);
	CU_add_test(s, "a locked message is busy, not changed", test_busy);
	CU_add_test(s, "retry view: records, waiting messages, retry now, delete", test_retry);
	CU_add_test(s, "escape sequences and UTF-8 from mail", test_escape);
	CU_add_test(s, "resize to 60x20 and back", test_resize);
	CU_add_test(s, "a live delivery in Sessions", test_live_session);
	CU_add_test(s, "deliver now", test_deliver_now);
}
