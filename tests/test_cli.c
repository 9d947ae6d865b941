/*
 * tests/test_cli.c - qctl and qhints end to end, on temporary spools.
 *
 * Every case writes its own qkit.conf (spool_directory under a fresh
 * t_tmpdir) and runs the built programs with -C; nothing here depends on
 * the machine's configuration. The library is used in this process only
 * to set up what a program cannot (a held message lock, serialization
 * slots of a fake boot, wait entries) and to check what was stored; the
 * spool handle is closed before programs run, except where a test holds
 * a lock on purpose.
 *
 * bin/cli.c is compiled into this file so that its formatters and JSON
 * helpers can be tested directly (it has no main()).
 *
 * JSON output is checked with a small recursive-descent validator
 * (json_check below), not with an external tool.
 */
#include "config.h"
#include "tests/tlib.h"
#include "bin/cli.c"

#include "q/addr.h"
#include "q/hints.h"
#include "q/retry.h"
#include "q/spool.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

extern char **environ;

/* ------------------------------------------------------------------ */
/* a tiny JSON validator */

struct jp {
	const char *p, *end;
	int depth;
};

static void j_ws(struct jp *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' ||
				 *j->p == '\t'))
		j->p++;
}

static bool j_value(struct jp *j);

static bool j_lit(struct jp *j, const char *s)
{
	size_t n = strlen(s);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, s, n) != 0)
		return false;
	j->p += n;
	return true;
}

static bool j_string(struct jp *j)
{
	if (j->p >= j->end || *j->p != '"')
		return false;
	j->p++;
	while (j->p < j->end) {
		unsigned char c = (unsigned char)*j->p++;

		if (c == '"')
			return true;
		if (c < 0x20)
			return false;
		if (c == '\\') {
			if (j->p >= j->end)
				return false;
			c = (unsigned char)*j->p++;
			if (c == 'u') {
				for (int i = 0; i < 4; i++) {
					if (j->p >= j->end || !strchr("0123456789abcdefABCDEF", *j->p)
					    || *j->p == '\0')
						return false;
					j->p++;
				}
			} else if (!strchr("\"\\/bfnrt", c) || c == '\0') {
				return false;
			}
		}
	}
	return false;
}

static bool j_number(struct jp *j)
{
	const char *s = j->p;

	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p >= j->end || *j->p < '0' || *j->p > '9')
		return false;
	if (*j->p == '0')
		j->p++;
	else
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (j->p >= j->end || *j->p < '0' || *j->p > '9')
			return false;
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (j->p >= j->end || *j->p < '0' || *j->p > '9')
			return false;
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	}
	return j->p > s;
}

/* Parses a container; *count_r (when not NULL) gets its element count. */
static bool j_container(struct jp *j, size_t *count_r)
{
	char open = *j->p, close = open == '[' ? ']' : '}';
	size_t n = 0;

	if (++j->depth > 64)
		return false;
	j->p++;
	j_ws(j);
	if (j->p < j->end && *j->p == close) {
		j->p++;
		j->depth--;
		if (count_r != NULL)
			*count_r = 0;
		return true;
	}
	for (;;) {
		j_ws(j);
		if (open == '{') {
			if (!j_string(j))
				return false;
			j_ws(j);
			if (j->p >= j->end || *j->p != ':')
				return false;
			j->p++;
			j_ws(j);
		}
		if (!j_value(j))
			return false;
		n++;
		j_ws(j);
		if (j->p >= j->end)
			return false;
		if (*j->p == ',') {
			j->p++;
			continue;
		}
		if (*j->p == close) {
			j->p++;
			break;
		}
		return false;
	}
	j->depth--;
	if (count_r != NULL)
		*count_r = n;
	return true;
}

static bool j_value(struct jp *j)
{
	if (j->p >= j->end)
		return false;
	switch (*j->p) {
	case '{': case '[': return j_container(j, NULL);
	case '"': return j_string(j);
	case 't': return j_lit(j, "true");
	case 'f': return j_lit(j, "false");
	case 'n': return j_lit(j, "null");
	default: return j_number(j);
	}
}

/* true when s[0..n) is one JSON value (white space around allowed);
 * *count_r: number of elements/members when it is an array/object. */
static bool json_check(const char *s, size_t n, size_t *count_r)
{
	struct jp j = { s, s + n, 0 };
	bool ok;

	if (count_r != NULL)
		*count_r = 0;
	j_ws(&j);
	if (j.p < j.end && (*j.p == '[' || *j.p == '{'))
		ok = j_container(&j, count_r);
	else
		ok = j_value(&j);
	j_ws(&j);
	return ok && j.p == j.end;
}

static void test_json_checker(void)
{
	static const struct { const char *s; bool ok; size_t n; } cases[] = {
		{ "[]", true, 0 }, { "{}", true, 0 }, { " [1, 2 ,3]\n", true, 3 },
		{ "{\"a\":[true,false,null],\"b\":\"x\\n\\u00e9\"}", true, 2 },
		{ "-0.5e+3", true, 0 }, { "\"\"", true, 0 },
		{ "[1,]", false, 0 }, { "[1 2]", false, 0 }, { "{\"a\"}", false, 0 },
		{ "\"a\nb\"", false, 0 }, { "[", false, 0 }, { "01", false, 0 },
		{ "[]]", false, 0 }, { "{a:1}", false, 0 }, { "\"\\x\"", false, 0 },
		{ "", false, 0 }, { "tru", false, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = 99;
		bool ok = json_check(cases[i].s, strlen(cases[i].s), &n);

		CU_ASSERT_EQUAL(ok, cases[i].ok);
		if (ok && ok == cases[i].ok)
			CU_ASSERT_EQUAL(n, cases[i].n);
		if (ok != cases[i].ok)
			fprintf(stderr, "json case %zu: '%s'\n", i, cases[i].s);
	}
}

/* ------------------------------------------------------------------ */
/* cli.c's own helpers */

static void test_formatters(void)
{
	static const struct { long long secs; const char *s; } ages[] = {
		{ -5, "0m" }, { 0, "0m" }, { 59, "0m" }, { 60, "1m" },
		{ 25 * 60, "25m" }, { 90 * 60, "90m" }, { 91 * 60, "2h" },
		{ 3 * 3600, "3h" }, { 72 * 3600, "72h" }, { 73 * 3600, "3d" },
		{ 59 * 3600, "59h" }, { 84 * 3600, "4d" }, { 10 * 86400, "10d" },
	};
	static const struct { uint64_t n; const char *s; } sizes[] = {
		{ 0, "0" }, { 999, "999" }, { 1023, "1023" }, { 1024, "1.0K" },
		{ 2970, "2.9K" }, { 10188, "9.9K" }, { 10239, "10K" }, { 10240, "10K" },
		{ 1023 * 1024, "1023K" }, { 1024 * 1024, "1.0M" },
		{ 1258291, "1.2M" }, { 45ull << 20, "45M" }, { 3ull << 30, "3.0G" },
	};
	char buf[32];

	for (size_t i = 0; i < sizeof(ages) / sizeof(ages[0]); i++) {
		cli_fmt_age(ages[i].secs, buf, sizeof(buf));
		CU_ASSERT_STRING_EQUAL(buf, ages[i].s);
	}
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		cli_fmt_size(sizes[i].n, buf, sizeof(buf));
		CU_ASSERT_STRING_EQUAL(buf, sizes[i].s);
	}
	CU_ASSERT_STRING_EQUAL(cli_state_name('D'), "delivered");
	CU_ASSERT_STRING_EQUAL(cli_state_name('F'), "failed");
	CU_ASSERT_STRING_EQUAL(cli_state_name('P'), "pending");
}

static void test_json_helpers(void)
{
	q_buf_reset(&cli.out);
	cli_json_open('[');
	cli_json_open('{');
	cli_json_kstr("a", "x\"y\x1b");
	cli_json_kint("b", -3);
	cli_json_kbool("c", true);
	cli_json_kstr("d", NULL);
	cli_json_close('}');
	cli_put(",\n");
	cli_json_open('{');
	cli_json_key("e");
	cli_json_open('[');
	cli_json_int(1);
	cli_json_str("two");
	cli_json_close(']');
	cli_json_close('}');
	cli_json_open('{');          /* separator added after '}' */
	cli_json_close('}');
	cli_json_close(']');
	CU_ASSERT_TRUE(json_check(cli.out.data, cli.out.len, NULL));
	CU_ASSERT_STRING_EQUAL(cli.out.data,
		"[{\"a\":\"x\\\"y\\u001b\",\"b\":-3,\"c\":true,\"d\":null},\n"
		"{\"e\":[1,\"two\"]},{}]");
	q_buf_reset(&cli.out);
	cli.utf8 = false;
	cli_put_safe("a\x1b[31m\tb\n", strlen("a\x1b[31m\tb\n"));
	CU_ASSERT_STRING_EQUAL(cli.out.data, "a\\x1b[31m\tb\\x0a");
	q_buf_free(&cli.out);
}

/* ------------------------------------------------------------------ */
/* running the programs */

struct env {
	char *dir;               /* the temporary directory */
	char conf[4096];         /* its qkit.conf */
	char spool[4096];        /* its spool directory */
};

static void env_make(struct env *e, const char *extra)
{
	char text[8192];

	memset(e, 0, sizeof(*e));
	e->dir = t_tmpdir();
	CU_ASSERT_PTR_NOT_NULL_FATAL(e->dir);
	snprintf(e->conf, sizeof(e->conf), "%s/qkit.conf", e->dir);
	snprintf(e->spool, sizeof(e->spool), "%s/spool", e->dir);
	snprintf(text, sizeof(text), "# test configuration\nspool_directory = %s\n%s",
		 e->spool, extra != NULL ? extra : "");
	CU_ASSERT_EQUAL_FATAL(t_write_file(e->conf, text), 0);
}

/* Run PROG -C conf ARGS... (NULL-terminated) with stdin_data. */
static int run_prog(const char *prog, const struct env *e, const char *stdin_data,
		    const char *const *extra_env, struct t_out *o, ...)
{
	const char *argv[64];
	const char *bin = t_bin(prog);
	size_t n = 0;
	va_list ap;
	const char *a;

	memset(o, 0, sizeof(*o));
	CU_ASSERT_PTR_NOT_NULL_FATAL(bin);
	argv[n++] = bin;
	if (e != NULL) {
		argv[n++] = "-C";
		argv[n++] = e->conf;
	}
	va_start(ap, o);
	while ((a = va_arg(ap, const char *)) != NULL && n < 63)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	CU_ASSERT_EQUAL_FATAL(t_run_env(argv, extra_env, stdin_data, o), 0);
	return o->status;
}

#define QCTL(e, in, o, ...) run_prog("qctl", (e), (in), NULL, (o), __VA_ARGS__, (const char *)NULL)
#define QHINTS(e, o, ...) run_prog("qhints", (e), NULL, NULL, (o), __VA_ARGS__, (const char *)NULL)

static const char msg1[] =
	"From: alice@example.org\n"
	"To: bob@example.com\n"
	"Subject: test\n"
	"\n"
	"hello\n"
	".a line that starts with a dot\n";

/* Submit msg to rcpt, assert success, copy the id. */
static void submit(const struct env *e, const char *sender, const char *rcpt,
		   const char *msg, char id[Q_ID_LEN + 1])
{
	struct t_out o;

	if (sender != NULL)
		QCTL(e, msg, &o, "submit", "-f", sender, rcpt);
	else
		QCTL(e, msg, &o, "submit", rcpt);
	if (o.status != 0)
		fprintf(stderr, "submit failed (%d): %s", o.status, o.err);
	CU_ASSERT_EQUAL_FATAL(o.status, 0);
	CU_ASSERT_EQUAL_FATAL(o.outlen, Q_ID_LEN + 1);
	CU_ASSERT_EQUAL(o.out[Q_ID_LEN], '\n');
	memcpy(id, o.out, Q_ID_LEN);
	id[Q_ID_LEN] = '\0';
	CU_ASSERT_TRUE_FATAL(q_id_valid(id));
	t_out_free(&o);
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		if (*s == '\n')
			n++;
	return n;
}

static long list_count(const struct env *e)
{
	struct t_out o;
	long n;

	QCTL(e, NULL, &o, "list", "-c");
	CU_ASSERT_EQUAL_FATAL(o.status, 0);
	n = strtol(o.out, NULL, 10);
	t_out_free(&o);
	return n;
}

static struct q_spool *open_spool(const struct env *e)
{
	struct q_spool *s = NULL;
	const char *err = NULL;

	if (q_spool_open(e->spool, Q_SPOOL_CREATE, &s, &err) < 0)
		fprintf(stderr, "q_spool_open: %s\n", err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	return s;
}

static char *read_data(const struct env *e, const char *id, size_t *len)
{
	struct q_spool *s = open_spool(e);
	char path[4096];
	char *data;

	q_spool_path(s, id, 'D', path, sizeof(path));
	q_spool_close(&s);
	data = t_read_file(path, len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(data);
	return data;
}

/* ------------------------------------------------------------------ */
/* qctl: help, version, usage */

static void test_help_version(void)
{
	static const char *const cmds[] = {
		"submit", "list", "show", "freeze", "thaw", "rm", "retry", "stats",
		"sessions", "config", "flush",
	};
	static const char *const hcmds[] = { "dump", "tidy", "delete", "rebuild", "reboot" };
	struct t_out o;

	QCTL(NULL, NULL, &o, "--help");
	CU_ASSERT_EQUAL(o.status, 0);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		CU_ASSERT_PTR_NOT_NULL(strstr(o.out, cmds[i]));
	t_out_free(&o);

	QCTL(NULL, NULL, &o, "--version");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_STRING_EQUAL(o.out, "qctl (qkit) " PACKAGE_VERSION "\n");
	t_out_free(&o);

	QHINTS(NULL, &o, "--help");
	CU_ASSERT_EQUAL(o.status, 0);
	for (size_t i = 0; i < sizeof(hcmds) / sizeof(hcmds[0]); i++)
		CU_ASSERT_PTR_NOT_NULL(strstr(o.out, hcmds[i]));
	t_out_free(&o);

	QHINTS(NULL, &o, "--version");
	CU_ASSERT_STRING_EQUAL(o.out, "qhints (qkit) " PACKAGE_VERSION "\n");
	t_out_free(&o);

	QCTL(NULL, NULL, &o, "frobnicate");
	CU_ASSERT_EQUAL(o.status, 64);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "frobnicate"));
	t_out_free(&o);
	QCTL(NULL, NULL, &o, NULL);
	CU_ASSERT_EQUAL(o.status, 64);
	t_out_free(&o);
	QCTL(NULL, NULL, &o, "list", "--bogus");
	CU_ASSERT_EQUAL(o.status, 64);
	t_out_free(&o);
	QHINTS(NULL, &o, "frobnicate");
	CU_ASSERT_EQUAL(o.status, 64);
	t_out_free(&o);
}

/* ------------------------------------------------------------------ */
/* qctl: configuration errors */

static void test_config_error(void)
{
	struct env e;
	struct t_out o;
	char want[4200];
	struct stat st;

	env_make(&e, "hosts_max_try = 3\nno_such_option = 1\n");
	QCTL(&e, msg1, &o, "submit", "bob@example.com");
	CU_ASSERT_EQUAL(o.status, 78);
	snprintf(want, sizeof(want), "qctl: %s:4:", e.conf);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, want));
	CU_ASSERT_EQUAL(o.outlen, 0);
	t_out_free(&o);
	/* nothing touched: the spool was not created */
	CU_ASSERT_NOT_EQUAL(stat(e.spool, &st), 0);

	QCTL(&e, NULL, &o, "list");
	CU_ASSERT_EQUAL(o.status, 78);
	t_out_free(&o);
	QHINTS(&e, &o, "tidy");
	CU_ASSERT_EQUAL(o.status, 78);
	snprintf(want, sizeof(want), "qhints: %s:4:", e.conf);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, want));
	t_out_free(&o);

	/* a file named by -C that does not exist */
	snprintf(e.conf, sizeof(e.conf), "%s/missing.conf", e.dir);
	QCTL(&e, NULL, &o, "list");
	CU_ASSERT_EQUAL(o.status, 78);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "missing.conf"));
	t_out_free(&o);

	/* cron's jobs on a machine that has no spool yet: nothing to do */
	env_make(&e, NULL);
	QHINTS(&e, &o, "reboot");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "nothing to do"));
	t_out_free(&o);
	QHINTS(&e, &o, "tidy");
	CU_ASSERT_EQUAL(o.status, 0);
	t_out_free(&o);
	CU_ASSERT_NOT_EQUAL(stat(e.spool, &st), 0);
	QCTL(&e, NULL, &o, "list");
	CU_ASSERT_EQUAL(o.status, 66);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "does not exist"));
	t_out_free(&o);

	/* a good one is printed back by `qctl config` */
	env_make(&e, "hosts_max_try = 3\n");
	QCTL(&e, NULL, &o, "config");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "hosts_max_try = 3"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, e.spool));
	t_out_free(&o);
}

/* ------------------------------------------------------------------ */
/* qctl submit */

static void test_submit_list_show(void)
{
	struct env e;
	struct t_out o;
	char id[Q_ID_LEN + 1], line[256];
	char *data;
	size_t len;

	env_make(&e, NULL);
	submit(&e, "alice@example.org", "bob@example.com", msg1, id);

	QCTL(&e, NULL, &o, "list");
	CU_ASSERT_EQUAL(o.status, 0);
	snprintf(line, sizeof(line), " %s <alice@example.org>\n", id);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, line));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "\n          bob@example.com\n"));
	t_out_free(&o);

	QCTL(&e, NULL, &o, "list", "-i");
	snprintf(line, sizeof(line), "%s\n", id);
	CU_ASSERT_STRING_EQUAL(o.out, line);
	t_out_free(&o);

	QCTL(&e, NULL, &o, "show", id);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, id));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "<alice@example.org>"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "<bob@example.com>"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "pending"));
	t_out_free(&o);

	QCTL(&e, NULL, &o, "show", id, "--json");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_TRUE(json_check(o.out, o.outlen, NULL));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "\"address\":\"bob@example.com\""));
	t_out_free(&o);

	/* stored canonically: CRLF, dot-stuffed */
	data = read_data(&e, id, &len);
	CU_ASSERT_PTR_NOT_NULL(strstr(data, "Subject: test\r\n\r\nhello\r\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(data, "\r\n..a line that starts"));
	CU_ASSERT_PTR_NULL(strstr(data, "test\n"));
	free(data);

	/* shown unstuffed, split at the empty line */
	QCTL(&e, NULL, &o, "show", id, "--body");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_STRING_EQUAL(o.out, "hello\n.a line that starts with a dot\n");
	t_out_free(&o);
	QCTL(&e, NULL, &o, "show", id, "--headers");
	CU_ASSERT_STRING_EQUAL(o.out, "From: alice@example.org\nTo: bob@example.com\n"
			       "Subject: test\n");
	t_out_free(&o);

	/* unknown ids */
	QCTL(&e, NULL, &o, "show", "000000-0000-0000");
	CU_ASSERT_EQUAL(o.status, 66);
	t_out_free(&o);
	QCTL(&e, NULL, &o, "show", "../../etc/passwd");
	CU_ASSERT_EQUAL(o.status, 66);
	t_out_free(&o);
}

static void test_submit_refusals(void)
{
	static const char *const bad[] = {
		"bob", "bob@", "@example.com", "bob@@example.com", "bob example@x.org",
		"a@b..c",
		"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx@example.com",
	};
	struct env e;
	struct t_out o;
	char id[Q_ID_LEN + 1];
	struct q_buf longline = { 0 };

	env_make(&e, NULL);
	submit(&e, "alice@example.org", "bob@example.com", msg1, id);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* one bad address among good ones: nothing spooled */
		QCTL(&e, msg1, &o, "submit", "ok@example.com", bad[i], "ok2@example.com");
		CU_ASSERT_EQUAL(o.status, 65);
		CU_ASSERT_EQUAL(o.outlen, 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "bad recipient address"));
		t_out_free(&o);
	}
	QCTL(&e, msg1, &o, "submit", "-f", "bad sender", "ok@example.com");
	CU_ASSERT_EQUAL(o.status, 65);
	t_out_free(&o);
	CU_ASSERT_EQUAL(list_count(&e), 1);

	/* no recipients */
	QCTL(&e, msg1, &o, "submit");
	CU_ASSERT_EQUAL(o.status, 64);
	t_out_free(&o);
	QCTL(&e, "Subject: none\n\nx\n", &o, "submit", "-t");
	CU_ASSERT_EQUAL(o.status, 64);
	t_out_free(&o);

	/* an over-long line */
	q_buf_adds(&longline, "Subject: x\n\n");
	for (int i = 0; i < 1200; i++)
		q_buf_addc(&longline, 'a');
	q_buf_adds(&longline, "\n");
	QCTL(&e, longline.data, &o, "submit", "ok@example.com");
	CU_ASSERT_EQUAL(o.status, 65);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "line"));
	t_out_free(&o);
	q_buf_free(&longline);
	CU_ASSERT_EQUAL(list_count(&e), 1);

	/* a null sender is fine */
	QCTL(&e, msg1, &o, "submit", "-f", "<>", "ok@example.com");
	CU_ASSERT_EQUAL(o.status, 0);
	t_out_free(&o);
	QCTL(&e, NULL, &o, "list");
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, " <>\n"));
	t_out_free(&o);
	CU_ASSERT_EQUAL(list_count(&e), 2);
}

/* Run argv with stdin from in_path, stdout/stderr to out_path; returns the
 * pid (the caller waits). For input that a C string cannot carry. */
static pid_t spawn_file(const char *const argv[], const char *in_path,
			const char *out_path)
{
	posix_spawn_file_actions_t fa;
	pid_t pid = -1;
	int rc;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, in_path, O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, out_path,
					 O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	return pid;
}

static int wait_status(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_submit_nul(void)
{
	static const char data[] = "Subject: nul\n\nbefore\0after\n";
	struct env e;
	char in[4200], out[4200], id[Q_ID_LEN + 1];
	const char *argv[] = { t_bin("qctl"), "-C", NULL, "submit", "ok@example.com",
			       NULL };
	char *text;
	int fd;

	env_make(&e, NULL);
	submit(&e, "alice@example.org", "bob@example.com", msg1, id);
	argv[2] = e.conf;
	CU_ASSERT_PTR_NOT_NULL_FATAL(argv[0]);
	snprintf(in, sizeof(in), "%s/nul.msg", e.dir);
	snprintf(out, sizeof(out), "%s/nul.out", e.dir);
	fd = open(in, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(write(fd, data, sizeof(data) - 1), (ssize_t)sizeof(data) - 1);
	close(fd);
	CU_ASSERT_EQUAL(wait_status(spawn_file(argv, in, out)), 65);
	text = t_read_file(out, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(text);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "NUL"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "nothing spooled"));
	free(text);
	CU_ASSERT_EQUAL(list_count(&e), 1);
}

static void test_submit_t(void)
{
	static const char msg[] =
		"From: Alice <alice@example.org>\n"
		"To: Bob <bob@example.com>, carol@example.net\n"
		"Cc: \"Dave D.\" <dave@example.com>\n"
		"Bcc: eve@example.org\n"
		"Subject: extracted\n"
		"\n"
		"Bcc: this line is body, not header\n";
	struct env e;
	struct q_spool *s;
	struct q_env *env = NULL;
	char id[Q_ID_LEN + 1];
	struct t_out o;
	char *data;
	size_t len;

	env_make(&e, NULL);
	QCTL(&e, msg, &o, "submit", "-f", "alice@example.org", "-t");
	CU_ASSERT_EQUAL_FATAL(o.status, 0);
	memcpy(id, o.out, Q_ID_LEN);
	id[Q_ID_LEN] = '\0';
	t_out_free(&o);

	s = open_spool(&e);
	CU_ASSERT_EQUAL_FATAL(q_spool_read(s, id, &env, NULL), 0);
	CU_ASSERT_EQUAL(env->nrcpt, 4);
	if (env->nrcpt == 4) {
		CU_ASSERT_STRING_EQUAL(env->rcpt[0].addr, "bob@example.com");
		CU_ASSERT_STRING_EQUAL(env->rcpt[1].addr, "carol@example.net");
		CU_ASSERT_STRING_EQUAL(env->rcpt[2].addr, "dave@example.com");
		CU_ASSERT_STRING_EQUAL(env->rcpt[3].addr, "eve@example.org");
	}
	CU_ASSERT_STRING_EQUAL(env->sender, "alice@example.org");
	q_env_free(&env);
	q_spool_close(&s);

	data = read_data(&e, id, &len);
	CU_ASSERT_PTR_NULL(strstr(data, "Bcc: eve"));
	CU_ASSERT_PTR_NULL(strstr(data, "eve@example.org"));
	CU_ASSERT_PTR_NOT_NULL(strstr(data, "To: Bob <bob@example.com>"));
	CU_ASSERT_PTR_NOT_NULL(strstr(data, "Cc: \"Dave D.\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(data, "\r\n\r\nBcc: this line is body"));
	free(data);

	/* -t plus an argument: both, without duplicates */
	QCTL(&e, msg, &o, "submit", "-t", "bob@example.com", "zed@example.com");
	CU_ASSERT_EQUAL_FATAL(o.status, 0);
	memcpy(id, o.out, Q_ID_LEN);
	t_out_free(&o);
	s = open_spool(&e);
	CU_ASSERT_EQUAL_FATAL(q_spool_read(s, id, &env, NULL), 0);
	CU_ASSERT_EQUAL(env->nrcpt, 5);
	q_env_free(&env);
	q_spool_close(&s);
}

/* ------------------------------------------------------------------ */
/* 1000 submissions, list -c, list --json */

/* Submit messages i = w, w + step, ... < n (in a forked child: no CUnit
 * calls here). Returns the number of failures. */
static int submit_share(const struct env *e, int w, int step, int n)
{
	const char *bin = t_bin("qctl");
	int bad = 0;

	for (int i = w; i < n; i += step) {
		char rcpt[64];
		const char *argv[] = { bin, "-C", e->conf, "submit", "-f",
				       "bulk@example.org", rcpt, NULL };
		struct t_out o;

		snprintf(rcpt, sizeof(rcpt), "user%d@d%d.example.com", i, i % 7);
		if (bin == NULL || t_run(argv, msg1, &o) < 0) {
			bad++;
			continue;
		}
		if (o.status != 0) {
			fprintf(stderr, "submit %d: status %d: %s", i, o.status, o.err);
			bad++;
		}
		t_out_free(&o);
	}
	return bad;
}

/* 1000 messages from 4 concurrent submitters (each submit fsyncs, so
 * this is mostly waiting for the disk; in parallel it waits less, and
 * it checks that concurrent submitters get distinct ids) */
static void test_thousand(void)
{
	enum { N = 1000, WORKERS = 4 };
	struct env e;
	struct t_out o;
	pid_t pids[WORKERS];
	size_t n = 0;

	env_make(&e, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t_bin("qctl"));
	for (int w = 0; w < WORKERS; w++) {
		pids[w] = fork();
		CU_ASSERT_FATAL(pids[w] >= 0);
		if (pids[w] == 0)
			_exit(submit_share(&e, w, WORKERS, N) == 0 ? 0 : 1);
	}
	for (int w = 0; w < WORKERS; w++)
		CU_ASSERT_EQUAL(wait_status(pids[w]), 0);

	QCTL(&e, NULL, &o, "list", "-c");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_STRING_EQUAL(o.out, "1000\n");
	t_out_free(&o);

	QCTL(&e, NULL, &o, "list", "--json");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_TRUE(json_check(o.out, o.outlen, &n));
	CU_ASSERT_EQUAL(n, 1000);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "\"address\":\"user999@d5.example.com\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "\"state\":\"pending\""));
	t_out_free(&o);

	QCTL(&e, NULL, &o, "list", "-i");
	CU_ASSERT_EQUAL(count_lines(o.out), 1000);
	t_out_free(&o);

	QCTL(&e, NULL, &o, "list");
	CU_ASSERT_EQUAL(count_lines(o.out), 3000);   /* header, rcpt, blank */
	t_out_free(&o);

	/* filters count what matches */
	QCTL(&e, NULL, &o, "list", "-c", "-r", "@d3\\.example\\.com$");
	CU_ASSERT_STRING_EQUAL(o.out, "143\n");
	t_out_free(&o);

	QCTL(&e, NULL, &o, "stats");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "TOTAL"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "d0.example.com"));
	t_out_free(&o);
	QCTL(&e, NULL, &o, "stats", "--json");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_TRUE(json_check(o.out, o.outlen, NULL));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "\"total\":{\"messages\":[1000,1000,"));
	t_out_free(&o);
}

/* ------------------------------------------------------------------ */
/* filters, freeze, thaw, rm */

static void test_filters_and_ops(void)
{
	struct env e;
	struct t_out o;
	char a[Q_ID_LEN + 1], b[Q_ID_LEN + 1], c[Q_ID_LEN + 1], want[64];

	env_make(&e, NULL);
	submit(&e, "alice@example.org", "bob@example.com", msg1, a);
	submit(&e, "carol@example.net", "dave@Example.COM", msg1, b);
	submit(&e, "", "erin@other.example", msg1, c);

	QCTL(&e, NULL, &o, "freeze", b);
	CU_ASSERT_EQUAL(o.status, 0);
	snprintf(want, sizeof(want), "%s: frozen\n", b);
	CU_ASSERT_STRING_EQUAL(o.out, want);
	t_out_free(&o);
	QCTL(&e, NULL, &o, "freeze", b);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "already frozen"));
	t_out_free(&o);

	QCTL(&e, NULL, &o, "list");
	snprintf(want, sizeof(want), "%s <carol@example.net> *** frozen ***\n", b);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, want));
	t_out_free(&o);

	static const struct {
		const char *args[4];
		const char *expect;       /* which of a, b, c: "ab", ... */
	} cases[] = {
		{ { "-f", "^alice@" }, "a" },
		{ { "-f", "EXAMPLE\\.(org|net)$" }, "ab" },   /* case-insensitive */
		{ { "-f", "^$" }, "c" },                       /* null sender */
		{ { "-r", "example\\.com$" }, "ab" },
		{ { "-r", "^erin" }, "c" },
		{ { "-r", "nomatch" }, "" },
		{ { "-z" }, "b" },
		{ { "-x" }, "ac" },
		{ { "-y", "1h" }, "abc" },
		{ { "-o", "1h" }, "" },
		{ { "-o", "1d", "-x" }, "" },
		{ { "-x", "-r", "example\\.com" }, "a" },
		{ { "-y", "2d", "-f", "carol" }, "b" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char expect[64] = "";
		const char *ids[3] = { a, b, c };

		for (const char *p = cases[i].expect; *p != '\0'; p++) {
			strcat(expect, ids[*p - 'a']);
			strcat(expect, "\n");
		}
		run_prog("qctl", &e, NULL, NULL, &o, "list", "-i", cases[i].args[0],
			 cases[i].args[1], cases[i].args[2], cases[i].args[3],
			 (const char *)NULL);
		CU_ASSERT_EQUAL(o.status, 0);
		if (strcmp(o.out, expect) != 0)
			fprintf(stderr, "filter case %zu: got '%s' want '%s' (%s)\n", i,
				o.out, expect, o.err);
		CU_ASSERT_STRING_EQUAL(o.out, expect);
		t_out_free(&o);
	}
	QCTL(&e, NULL, &o, "list", "-o", "5x");
	CU_ASSERT_EQUAL(o.status, 64);
	t_out_free(&o);
	QCTL(&e, NULL, &o, "list", "-r", "(");
	CU_ASSERT_EQUAL(o.status, 64);
	t_out_free(&o);

	QCTL(&e, NULL, &o, "thaw", b);
	CU_ASSERT_EQUAL(o.status, 0);
	t_out_free(&o);
	QCTL(&e, NULL, &o, "list", "-z", "-c");
	CU_ASSERT_STRING_EQUAL(o.out, "0\n");
	t_out_free(&o);

	QCTL(&e, NULL, &o, "rm", a, "000000-0000-0000");
	CU_ASSERT_EQUAL(o.status, 66);         /* one of them did not exist */
	snprintf(want, sizeof(want), "%s: removed\n", a);
	CU_ASSERT_STRING_EQUAL(o.out, want);
	t_out_free(&o);
	QCTL(&e, NULL, &o, "show", a);
	CU_ASSERT_EQUAL(o.status, 66);
	t_out_free(&o);
	QCTL(&e, NULL, &o, "list", "-i");
	snprintf(want, sizeof(want), "%s\n%s\n", b, c);
	CU_ASSERT_STRING_EQUAL(o.out, want);
	t_out_free(&o);
	CU_ASSERT_EQUAL(list_count(&e), 2);
}

/* a message locked by "a delivery" (this process) is not changed */
static void test_busy(void)
{
	struct env e;
	struct t_out o;
	struct q_spool *s;
	struct q_msg *m = NULL;
	char id[Q_ID_LEN + 1], other[Q_ID_LEN + 1], want[64];

	env_make(&e, NULL);
	submit(&e, "alice@example.org", "bob@example.com", msg1, id);
	submit(&e, "alice@example.org", "bob@example.com", msg1, other);
	s = open_spool(&e);
	CU_ASSERT_EQUAL_FATAL(q_msg_lock(s, id, &m, NULL), 0);

	QCTL(&e, NULL, &o, "rm", id, other);
	CU_ASSERT_EQUAL(o.status, 75);
	snprintf(want, sizeof(want), "%s: busy (being delivered); not changed", id);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, want));
	snprintf(want, sizeof(want), "%s: removed\n", other);
	CU_ASSERT_STRING_EQUAL(o.out, want);    /* the other one is done */
	t_out_free(&o);
	QCTL(&e, NULL, &o, "freeze", id);
	CU_ASSERT_EQUAL(o.status, 75);
	t_out_free(&o);

	QCTL(&e, NULL, &o, "list", "-i");
	snprintf(want, sizeof(want), "%s\n", id);
	CU_ASSERT_STRING_EQUAL(o.out, want);
	t_out_free(&o);
	QCTL(&e, NULL, &o, "list", "-z", "-c");
	CU_ASSERT_STRING_EQUAL(o.out, "0\n");
	t_out_free(&o);

	q_msg_unlock(&m);
	q_spool_close(&s);
	QCTL(&e, NULL, &o, "rm", id);
	CU_ASSERT_EQUAL(o.status, 0);
	t_out_free(&o);
	CU_ASSERT_EQUAL(list_count(&e), 0);
}

/* bytes from mail never reach the output raw */
static void test_escaping(void)
{
	static const char msg[] =
		"Subject: \x1b]0;owned\x07 \x1b[2J\n"
		"\n"
		"body \x1b[31mred\x9b\n";
	struct env e;
	struct t_out o;
	char id[Q_ID_LEN + 1];

	env_make(&e, NULL);
	submit(&e, "alice@example.org", "bob@example.com", msg, id);
	QCTL(&e, NULL, &o, "show", id, "--headers");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NULL(memchr(o.out, 0x1b, o.outlen));
	CU_ASSERT_PTR_NULL(memchr(o.out, 0x07, o.outlen));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "Subject: \\x1b]0;owned\\x07 \\x1b[2J\n"));
	t_out_free(&o);
	QCTL(&e, NULL, &o, "show", id, "--body");
	CU_ASSERT_PTR_NULL(memchr(o.out, 0x1b, o.outlen));
	CU_ASSERT_PTR_NULL(memchr(o.out, 0x9b, o.outlen));
	CU_ASSERT_STRING_EQUAL(o.out, "body \\x1b[31mred\\x9b\n");
	t_out_free(&o);
}

/* ------------------------------------------------------------------ */
/* retry records */

static void test_retry(void)
{
	struct env e;
	struct t_out o;
	struct q_spool *s;
	struct q_hints *h;
	char id[Q_ID_LEN + 1];
	time_t now = time(NULL);
	size_t n;

	env_make(&e, NULL);
	submit(&e, "alice@example.org", "bob@example.com", msg1, id);
	s = open_spool(&e);
	CU_ASSERT_EQUAL_FATAL(q_spool_hints(s, &h, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(q_retry_fail(h, "T:mx1.example.com:192.0.2.1",
		q_retry_default_rule(), 0, "refused", 0, 111, "Connection refused",
		now - 600, NULL, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(q_retry_fail(h, "R:example.net",
		q_retry_default_rule(), 0, "lookup", 0, 0, "SERVFAIL \x1b[31m",
		now - 60, NULL, NULL), 0);
	q_spool_close(&s);

	QCTL(&e, NULL, &o, "retry");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "T:mx1.example.com:192.0.2.1 refused"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "Connection refused"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "R:example.net lookup"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "first failed:"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "next try at:"));
	CU_ASSERT_PTR_NULL(memchr(o.out, 0x1b, o.outlen));
	t_out_free(&o);

	QCTL(&e, NULL, &o, "retry", "mx1");
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "T:mx1"));
	CU_ASSERT_PTR_NULL(strstr(o.out, "R:example.net"));
	t_out_free(&o);
	QCTL(&e, NULL, &o, "retry", "R:*");
	CU_ASSERT_PTR_NULL(strstr(o.out, "T:mx1"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "R:example.net"));
	t_out_free(&o);

	QCTL(&e, NULL, &o, "retry", "--json");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_TRUE(json_check(o.out, o.outlen, &n));
	CU_ASSERT_EQUAL(n, 2);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "\"text\":\"SERVFAIL \\u001b[31m\""));
	t_out_free(&o);

	QCTL(&e, NULL, &o, "retry", "clear", "R:example.net");
	CU_ASSERT_EQUAL(o.status, 0);
	t_out_free(&o);
	QCTL(&e, NULL, &o, "retry", "clear", "R:example.net");
	CU_ASSERT_EQUAL(o.status, 66);
	t_out_free(&o);
	QCTL(&e, NULL, &o, "retry", "--json");
	CU_ASSERT_TRUE(json_check(o.out, o.outlen, &n));
	CU_ASSERT_EQUAL(n, 1);
	t_out_free(&o);

	QCTL(&e, NULL, &o, "sessions", "--json");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_TRUE(json_check(o.out, o.outlen, &n));
	CU_ASSERT_EQUAL(n, 0);
	t_out_free(&o);
}

/* ------------------------------------------------------------------ */
/* qhints */

struct slot_seen {
	bool old, cur;
};

static int slot_iter(const void *k, size_t klen, const void *v, size_t vlen,
		     void *ctx)
{
	struct slot_seen *ss = ctx;
	struct q_slot s;

	(void)k;
	(void)klen;
	if (q_slot_decode(v, vlen, &s, NULL) == 0) {
		if (strcmp(s.boot_id, "boot-old-0000") == 0)
			ss->old = true;
		if (strcmp(s.boot_id, "boot-current-1111") == 0)
			ss->cur = true;
	}
	return 0;
}

static void test_qhints_reboot(void)
{
	const char *const cur_env[] = { "QKIT_BOOT_ID=boot-current-1111", NULL };
	struct env e;
	struct t_out o;
	struct q_spool *s;
	struct q_hints *h;
	struct slot_seen ss = { false, false };
	unsigned slot;
	size_t n;
	time_t now = time(NULL);

	env_make(&e, NULL);
	s = open_spool(&e);
	CU_ASSERT_EQUAL_FATAL(q_spool_hints(s, &h, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(q_serialize_take(h, "old.example", 1, now,
					       "boot-old-0000", &slot, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(q_serialize_take(h, "cur.example", 1, now,
					       "boot-current-1111", &slot, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(q_hints_iter(h, Q_DB_SERIALIZE, NULL, 0, slot_iter,
					   &ss, NULL), 0);
	CU_ASSERT_TRUE_FATAL(ss.old && ss.cur);
	q_spool_close(&s);

	QHINTS(&e, &o, "dump", "serialize", "--json");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_TRUE(json_check(o.out, o.outlen, &n));
	CU_ASSERT_EQUAL(n, 2);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "boot-old-0000"));
	t_out_free(&o);

	run_prog("qhints", &e, NULL, cur_env, &o, "reboot", (const char *)NULL);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "removed 1 slot"));
	t_out_free(&o);

	s = open_spool(&e);
	CU_ASSERT_EQUAL_FATAL(q_spool_hints(s, &h, NULL), 0);
	ss.old = ss.cur = false;
	CU_ASSERT_EQUAL(q_hints_iter(h, Q_DB_SERIALIZE, NULL, 0, slot_iter, &ss, NULL), 0);
	CU_ASSERT_FALSE(ss.old);
	CU_ASSERT_TRUE(ss.cur);
	q_spool_close(&s);
}

static void test_qhints_tidy_dump(void)
{
	static const char *const dbs[] = { "index", "retry", "wait", "serialize",
					   "sessions", "wait-smtp" };
	struct env e;
	struct t_out o;
	struct q_spool *s;
	struct q_hints *h;
	char gone[Q_ID_LEN + 1], kept[Q_ID_LEN + 1], key[128];
	char **ids = NULL;
	size_t n = 0;
	time_t now = time(NULL);
	struct q_retry_rec rec;

	/* a static route: rebuild's wait lists need no DNS */
	env_make(&e, "route * = 127.0.0.1\n");
	submit(&e, "alice@example.org", "bob@example.com", msg1, gone);
	submit(&e, "alice@example.org", "bob@example.com", msg1, kept);
	s = open_spool(&e);
	CU_ASSERT_EQUAL_FATAL(q_spool_hints(s, &h, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(q_wait_add(h, "mx.example.com", gone, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(q_wait_add(h, "mx.example.com", kept, NULL), 0);
	snprintf(key, sizeof(key), "bob@example.com:%s", gone);
	CU_ASSERT_EQUAL_FATAL(q_retry_fail(h, key, q_retry_default_rule(), 0,
		"rcpt_4xx", 451, 0, "try later", now, NULL, NULL), 0);
	snprintf(key, sizeof(key), "bob@example.com:%s", kept);
	CU_ASSERT_EQUAL_FATAL(q_retry_fail(h, key, q_retry_default_rule(), 0,
		"rcpt_4xx", 451, 0, "try later", now, NULL, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(q_retry_fail(h, "T:old.example:192.0.2.9",
		q_retry_default_rule(), 0, "timeout", 0, 0, "timed out",
		now - 40 * 86400, NULL, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(q_retry_fail(h, "T:new.example:192.0.2.10",
		q_retry_default_rule(), 0, "timeout", 0, 0, "timed out",
		now - 3600, NULL, NULL), 0);
	/* a record of a version nobody knows: reported and skipped */
	CU_ASSERT_EQUAL_FATAL(q_hints_put(h, Q_DB_RETRY, "T:future.example", 16,
					  "\xfe\x01\x02", 3, NULL), 0);
	q_spool_close(&s);

	QHINTS(&e, &o, "dump", "retry", "--json");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_TRUE(json_check(o.out, o.outlen, &n));
	CU_ASSERT_EQUAL(n, 4);
	CU_ASSERT_PTR_NULL(strstr(o.out, "future"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "T:future.example"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "skipped"));
	t_out_free(&o);
	QCTL(&e, NULL, &o, "retry");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NULL(strstr(o.out, "future"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "T:future.example"));
	t_out_free(&o);

	QCTL(&e, NULL, &o, "rm", gone);
	CU_ASSERT_EQUAL_FATAL(o.status, 0);
	t_out_free(&o);

	for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
		QHINTS(&e, &o, "dump", dbs[i], "--json");
		CU_ASSERT_EQUAL(o.status, 0);
		CU_ASSERT_TRUE(json_check(o.out, o.outlen, NULL));
		t_out_free(&o);
		QHINTS(&e, &o, "dump", dbs[i]);
		CU_ASSERT_EQUAL(o.status, 0);
		t_out_free(&o);
	}
	QHINTS(&e, &o, "dump", "wait", "--json");
	CU_ASSERT_TRUE(json_check(o.out, o.outlen, &n));
	CU_ASSERT_EQUAL(n, 2);
	t_out_free(&o);
	QHINTS(&e, &o, "dump", "nosuchdb");
	CU_ASSERT_EQUAL(o.status, 64);
	t_out_free(&o);

	QHINTS(&e, &o, "tidy");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, gone));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "T:old.example:192.0.2.9"));
	CU_ASSERT_PTR_NULL(strstr(o.out, kept));
	CU_ASSERT_PTR_NULL(strstr(o.out, "T:new.example"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "total 3"));
	t_out_free(&o);

	s = open_spool(&e);
	CU_ASSERT_EQUAL_FATAL(q_spool_hints(s, &h, NULL), 0);
	n = 0;
	CU_ASSERT_EQUAL(q_wait_list(h, "mx.example.com", 0, &ids, &n, NULL), 0);
	CU_ASSERT_EQUAL(n, 1);
	if (n == 1)
		CU_ASSERT_STRING_EQUAL(ids[0], kept);
	q_strv_free(&ids, n);
	memset(&rec, 0, sizeof(rec));
	snprintf(key, sizeof(key), "bob@example.com:%s", gone);
	CU_ASSERT_EQUAL(q_retry_get(h, key, &rec, NULL), Q_NOTFOUND);
	snprintf(key, sizeof(key), "bob@example.com:%s", kept);
	CU_ASSERT_EQUAL(q_retry_get(h, key, &rec, NULL), 0);
	q_retry_rec_clear(&rec);
	CU_ASSERT_EQUAL(q_retry_get(h, "T:new.example:192.0.2.10", &rec, NULL), 0);
	q_retry_rec_clear(&rec);
	q_spool_close(&s);

	/* a second tidy finds nothing */
	QHINTS(&e, &o, "tidy", "-t", "30d");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "total 0"));
	t_out_free(&o);

	QHINTS(&e, &o, "delete", "retry", "T:new.example:192.0.2.10");
	CU_ASSERT_EQUAL(o.status, 0);
	t_out_free(&o);
	QHINTS(&e, &o, "delete", "retry", "T:new.example:192.0.2.10");
	CU_ASSERT_EQUAL(o.status, 66);
	t_out_free(&o);

	/* rebuild: the index again holds exactly the spool */
	QHINTS(&e, &o, "rebuild");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "1 message"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "1 entry"));
	t_out_free(&o);
	QHINTS(&e, &o, "dump", "wait");
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, kept));
	CU_ASSERT_EQUAL(count_lines(o.out), 1);
	t_out_free(&o);
	CU_ASSERT_EQUAL(list_count(&e), 1);
}

/* ------------------------------------------------------------------ */
/* SIGKILL during submit never leaves a half message in a listing */

static void test_kill_submit(void)
{
	struct env e;
	struct t_out o;
	char in[4200], out[4200], id[Q_ID_LEN + 1];
	const char *argv[] = { t_bin("qctl"), "-C", NULL, "submit", "-f",
			       "alice@example.org", "bob@example.com", NULL };
	struct q_buf big = { 0 };
	unsigned seed = 20240501;
	int killed = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(argv[0]);
	env_make(&e, NULL);
	submit(&e, "alice@example.org", "bob@example.com", msg1, id);
	argv[2] = e.conf;
	snprintf(in, sizeof(in), "%s/big.msg", e.dir);
	snprintf(out, sizeof(out), "%s/kill.out", e.dir);
	q_buf_adds(&big, "Subject: big\n\n");
	for (int i = 0; i < 20000; i++)
		q_buf_printf(&big, "line %d of a message that is killed while spooled\n", i);
	CU_ASSERT_EQUAL_FATAL(t_write_file(in, big.data), 0);
	q_buf_free(&big);

	for (int round = 0; round < 50; round++) {
		pid_t pid = spawn_file(argv, in, out);
		struct timespec ts = { 0, (long)(rand_r(&seed) % 40000) * 1000L };
		int st;

		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		st = wait_status(pid);
		if (st == 128 + SIGKILL)
			killed++;
		else
			CU_ASSERT_EQUAL(st, 0);
	}
	CU_ASSERT(killed > 0);

	QCTL(&e, NULL, &o, "list", "-i");
	CU_ASSERT_EQUAL_FATAL(o.status, 0);
	for (char *p = o.out, *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
		struct t_out so;

		*nl = '\0';
		CU_ASSERT_TRUE(q_id_valid(p));
		QCTL(&e, NULL, &so, "show", p);
		if (so.status != 0)
			fprintf(stderr, "listed but unreadable: %s: %s", p, so.err);
		CU_ASSERT_EQUAL(so.status, 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(so.out, "<bob@example.com>"));
		t_out_free(&so);
	}
	t_out_free(&o);

	/* and the whole queue still reads */
	QCTL(&e, NULL, &o, "list", "--json");
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_TRUE(json_check(o.out, o.outlen, NULL));
	t_out_free(&o);
}

/* ------------------------------------------------------------------ */

void suite_cli(void)
{
	CU_pSuite s = CU_add_suite("cli", NULL, NULL);

	CU_add_test(s, "json checker", test_json_checker);
	CU_add_test(s, "formatters", test_formatters);
	CU_add_test(s, "json helpers and escaping", test_json_helpers);
	CU_add_test(s, "help, version, usage", test_help_version);
	CU_add_test(s, "config errors exit 78 naming file:line", test_config_error);
	CU_add_test(s, "submit, list, show", test_submit_list_show);
	CU_add_test(s, "submit refusals: addresses, long lines", test_submit_refusals);
	CU_add_test(s, "submit refuses NUL bytes", test_submit_nul);
	CU_add_test(s, "submit -t takes To/Cc/Bcc, drops Bcc", test_submit_t);
	CU_add_test(s, "1000 submits: list -c, --json", test_thousand);
	CU_add_test(s, "list filters, freeze, thaw, rm", test_filters_and_ops);
	CU_add_test(s, "busy message is not changed (75)", test_busy);
	CU_add_test(s, "mail bytes escaped on output", test_escaping);
	CU_add_test(s, "retry list, filter, clear", test_retry);
	CU_add_test(s, "qhints reboot", test_qhints_reboot);
	CU_add_test(s, "qhints dump, tidy, delete, rebuild", test_qhints_tidy_dump);
	CU_add_test(s, "SIGKILL during submit", test_kill_submit);
}
