/*
 * tests/test_qutil.c - q_util: the growable buffer, Exim time values,
 * terminal and JSON escaping, boot id, pid liveness; and q_log (the main
 * log: modes, line format, escaping, whole lines from threads and
 * processes). Table-driven.
 */
#include "config.h"
#include "q/log.h"
#include "q/util.h"
#include "tests/tlib.h"

#include <pthread.h>
#include <regex.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void test_buf(void)
{
	struct q_buf b = { 0 };
	size_t i;

	CU_ASSERT_EQUAL(q_buf_add(&b, "", 0), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b.data);
	CU_ASSERT_EQUAL(b.len, 0);
	CU_ASSERT_STRING_EQUAL(b.data, "");
	CU_ASSERT_EQUAL(q_buf_adds(&b, "abc"), 0);
	CU_ASSERT_EQUAL(q_buf_addc(&b, 'd'), 0);
	CU_ASSERT_EQUAL(q_buf_add(&b, "e\0f", 3), 0);
	CU_ASSERT_EQUAL(b.len, 7);
	CU_ASSERT(memcmp(b.data, "abcde\0f", 8) == 0);
	CU_ASSERT_EQUAL(b.data[b.len], '\0');
	q_buf_reset(&b);
	CU_ASSERT_EQUAL(b.len, 0);
	CU_ASSERT_STRING_EQUAL(b.data, "");
	/* growth through printf, across many reallocations */
	for (i = 0; i < 5000; i++)
		CU_ASSERT_EQUAL_FATAL(q_buf_printf(&b, "%zu,", i % 10), 0);
	CU_ASSERT_EQUAL(b.len, 10000);
	CU_ASSERT(b.cap > b.len);
	CU_ASSERT_EQUAL(b.data[b.len], '\0');
	CU_ASSERT(strncmp(b.data, "0,1,2,", 6) == 0);
	CU_ASSERT(strcmp(b.data + 9990, "5,6,7,8,9,") == 0);
	/* one printf longer than the free space */
	q_buf_reset(&b);
	CU_ASSERT_EQUAL(q_buf_printf(&b, "%0300d|%s", 7, "end"), 0);
	CU_ASSERT_EQUAL(b.len, 304);
	CU_ASSERT_STRING_EQUAL(b.data + 296, "0007|end");
	CU_ASSERT_EQUAL(q_buf_reserve(&b, 100000), 0);
	CU_ASSERT(b.cap >= b.len + 100001);
	CU_ASSERT_EQUAL(b.len, 304);
	/* an impossible size fails and leaves the buffer as it was */
	CU_ASSERT_EQUAL(q_buf_reserve(&b, (size_t)-1), -1);
	CU_ASSERT_EQUAL(b.len, 304);
	CU_ASSERT_STRING_EQUAL(b.data + 296, "0007|end");
	q_buf_free(&b);
	CU_ASSERT_PTR_NULL(b.data);
	CU_ASSERT_EQUAL(b.len, 0);
	CU_ASSERT_EQUAL(b.cap, 0);
	q_buf_free(&b);                 /* twice is harmless */
}

static const struct {
	const char *in;
	int ret;
	long long secs;
} time_cases[] = {
	{ "0", 0, 0 },
	{ "30", 0, 30 },
	{ "30s", 0, 30 },
	{ "5m", 0, 300 },
	{ "2h", 0, 7200 },
	{ "1d", 0, 86400 },
	{ "1w", 0, 604800 },
	{ "1h30m", 0, 5400 },
	{ "1d2h3m4s", 0, 93784 },
	{ "2w1d", 0, 1296000 },
	{ "1m1m", 0, 120 },               /* Exim adds repeated units */
	{ "0s", 0, 0 },
	{ "007m", 0, 420 },
	{ "9223372036854775807", 0, 9223372036854775807LL },
	{ "9223372036854775807s", 0, 9223372036854775807LL },
	{ "", -1, 0 },
	{ "s", -1, 0 },
	{ "h1", -1, 0 },
	{ "-5m", -1, 0 },
	{ "+5m", -1, 0 },
	{ " 5m", -1, 0 },
	{ "5m ", -1, 0 },
	{ "5 m", -1, 0 },
	{ "5x", -1, 0 },
	{ "5M", -1, 0 },                  /* units are lower case */
	{ "1h30", -1, 0 },                /* 30 what? */
	{ "1.5h", -1, 0 },
	{ "5mm", -1, 0 },
	{ "9223372036854775808", -1, 0 },
	{ "9223372036854775807s1s", -1, 0 },
	{ "15250284452471w", 0, 9223372036854460800LL }, /* fits */
	{ "15250284452472w", -1, 0 },     /* overflow in the multiplication */
	{ "99999999999999999999d", -1, 0 },
};

static void test_time_parse(void)
{
	size_t i;

	for (i = 0; i < N(time_cases); i++) {
		long long v = -42;
		int r = q_time_parse(time_cases[i].in, &v);

		if (r != time_cases[i].ret ||
		    (r == 0 && v != time_cases[i].secs))
			fprintf(stderr, "\n  q_time_parse(\"%s\") = %d, %lld\n",
				time_cases[i].in, r, v);
		CU_ASSERT_EQUAL(r, time_cases[i].ret);
		if (time_cases[i].ret == 0) {
			CU_ASSERT_EQUAL(v, time_cases[i].secs);
		} else {
			CU_ASSERT_EQUAL(v, -42);  /* untouched on error */
		}
	}
}

static const struct {
	long long secs;
	const char *out;
} fmt_cases[] = {
	{ 0, "0s" },
	{ 1, "1s" },
	{ 45, "45s" },
	{ 60, "1m" },
	{ 90, "1m30s" },
	{ 300, "5m" },
	{ 3599, "59m59s" },
	{ 3600, "1h" },
	{ 3661, "1h1m" },                 /* at most two units */
	{ 8100, "2h15m" },
	{ 86400, "1d" },
	{ 86400 + 300, "1d" },            /* the second unit is the next one */
	{ 4 * 86400, "4d" },
	{ 3 * 86400 + 4 * 3600 + 59, "3d4h" },
	{ 400 * 86400, "400d" },
	{ -90, "-1m30s" },
	{ -86400, "-1d" },
	{ 9223372036854775807LL, "106751991167300d15h" },
	{ -9223372036854775807LL - 1, "-106751991167300d15h" },
};

static void test_time_format(void)
{
	size_t i;
	char buf[32];

	for (i = 0; i < N(fmt_cases); i++) {
		memset(buf, 'z', sizeof(buf));
		CU_ASSERT_PTR_EQUAL(q_time_format(fmt_cases[i].secs, buf,
						  sizeof(buf)), buf);
		if (strcmp(buf, fmt_cases[i].out) != 0)
			fprintf(stderr, "\n  q_time_format(%lld) = \"%s\"\n",
				fmt_cases[i].secs, buf);
		CU_ASSERT_STRING_EQUAL(buf, fmt_cases[i].out);
	}
	/* what it prints (without loss) parses back */
	for (i = 0; i < N(fmt_cases); i++) {
		long long v;

		if (fmt_cases[i].secs < 0 || fmt_cases[i].secs > 100000000)
			continue;
		q_time_format(fmt_cases[i].secs, buf, sizeof(buf));
		CU_ASSERT_EQUAL(q_time_parse(buf, &v), 0);
		CU_ASSERT(v <= fmt_cases[i].secs);
		CU_ASSERT(fmt_cases[i].secs - v < 3600);
	}
	/* a small buffer is cut, never overrun */
	memset(buf, 'z', sizeof(buf));
	q_time_format(8100, buf, 3);
	CU_ASSERT_STRING_EQUAL(buf, "2h");
	CU_ASSERT_EQUAL(buf[3], 'z');
}

static void test_time_stamp(void)
{
	char buf[32];
	const char *old = getenv("TZ");
	char *saved = old != NULL ? strdup(old) : NULL;

	setenv("TZ", "UTC", 1);
	tzset();
	CU_ASSERT_STRING_EQUAL(q_time_stamp(0, buf, sizeof(buf)), "-");
	CU_ASSERT_STRING_EQUAL(q_time_stamp(86400 + 3661, buf, sizeof(buf)),
			       "1970-01-02 01:01:01");
	CU_ASSERT_STRING_EQUAL(q_time_stamp(1700000000, buf, sizeof(buf)),
			       "2023-11-14 22:13:20");
	setenv("TZ", "UTC-2", 1);
	tzset();
	CU_ASSERT_STRING_EQUAL(q_time_stamp(1700000000, buf, sizeof(buf)),
			       "2023-11-15 00:13:20");
	if (saved != NULL)
		setenv("TZ", saved, 1);
	else
		unsetenv("TZ");
	tzset();
	free(saved);
}

static const struct {
	const char *in;
	size_t len;                 /* 0 = strlen */
	bool utf8;
	const char *out;
} esc_cases[] = {
	{ "", 0, true, "" },
	{ "plain text ~!", 0, true, "plain text ~!" },
	{ "a\\b", 0, true, "a\\\\b" },
	{ "\x1b[31mred", 0, true, "\\x1b[31mred" },
	{ "line\nnext\r\t", 0, true, "line\\x0anext\\x0d\\x09" },
	{ "del\x7f", 0, true, "del\\x7f" },
	{ "nul\0x", 5, true, "nul\\x00x" },
	{ "caf\xc3\xa9", 0, true, "caf\xc3\xa9" },              /* U+00E9 */
	{ "caf\xc3\xa9", 0, false, "caf\\xc3\\xa9" },
	{ "\xc2\xa0", 0, true, "\xc2\xa0" },                     /* U+00A0 */
	{ "\xc2\x9b" "31m", 0, true, "\\xc2\\x9b31m" },          /* C1 CSI */
	{ "\xc2\x85", 0, true, "\\xc2\\x85" },                   /* C1 NEL */
	{ "\xc2\x9f", 0, true, "\\xc2\\x9f" },
	{ "\x9b" "31m", 0, true, "\\x9b31m" },                   /* raw C1 */
	{ "\xc0\xaf", 0, true, "\\xc0\\xaf" },                   /* overlong / */
	{ "\xe0\x80\xaf", 0, true, "\\xe0\\x80\\xaf" },          /* overlong */
	{ "\xf0\x80\x80\xaf", 0, true, "\\xf0\\x80\\x80\\xaf" }, /* overlong */
	{ "\xed\xa0\x80", 0, true, "\\xed\\xa0\\x80" },          /* surrogate */
	{ "\xe2\x82\xac", 0, true, "\xe2\x82\xac" },             /* euro */
	{ "\xf0\x9f\x98\x80", 0, true, "\xf0\x9f\x98\x80" },     /* emoji */
	{ "\xf4\x90\x80\x80", 0, true, "\\xf4\\x90\\x80\\x80" }, /* > 10FFFF */
	{ "\xe2\x82", 0, true, "\\xe2\\x82" },                   /* truncated */
	{ "\xe2\x82" "A", 0, true, "\\xe2\\x82A" },
	{ "\xff\xfe", 0, true, "\\xff\\xfe" },
	{ "\xc3", 0, true, "\\xc3" },
};

static void test_escape_term(void)
{
	size_t i;

	for (i = 0; i < N(esc_cases); i++) {
		struct q_buf b = { 0 };
		size_t len = esc_cases[i].len ? esc_cases[i].len
					      : strlen(esc_cases[i].in);

		CU_ASSERT_EQUAL(q_buf_adds(&b, "<"), 0);
		CU_ASSERT_EQUAL(q_escape_term(&b, esc_cases[i].in, len,
					      esc_cases[i].utf8), 0);
		CU_ASSERT_PTR_NOT_NULL_FATAL(b.data);
		if (strcmp(b.data + 1, esc_cases[i].out) != 0)
			fprintf(stderr, "\n  escape case %zu: got \"%s\"\n", i,
				b.data + 1);
		CU_ASSERT_STRING_EQUAL(b.data + 1, esc_cases[i].out);
		/* never a control byte in the output */
		for (size_t k = 0; k < b.len; k++) {
			unsigned char c = (unsigned char)b.data[k];

			CU_ASSERT(c >= 0x20 && c != 0x7f);
		}
		q_buf_free(&b);
	}
}

static void test_fputs_safe(void)
{
	char *mem = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&mem, &len);

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	q_fputs_safe("ok \x1b]0;title\x07 \xc3\xa9\\", f);
	fclose(f);
	CU_ASSERT_STRING_EQUAL(mem, "ok \\x1b]0;title\\x07 \xc3\xa9\\\\");
	free(mem);
}

static const struct {
	const char *in;
	size_t len;
	const char *out;
} json_cases[] = {
	{ "", 0, "\"\"" },
	{ "abc", 0, "\"abc\"" },
	{ "a\"b\\c/", 0, "\"a\\\"b\\\\c/\"" },
	{ "\b\f\n\r\t", 0, "\"\\b\\f\\n\\r\\t\"" },
	{ "\x01\x1f", 0, "\"\\u0001\\u001f\"" },
	{ "\x7f", 0, "\"\\u007f\"" },
	{ "n\0l", 3, "\"n\\u0000l\"" },
	{ "caf\xc3\xa9", 0, "\"caf\xc3\xa9\"" },
	{ "\xe2\x82\xac\xf0\x9f\x98\x80", 0, "\"\xe2\x82\xac\xf0\x9f\x98\x80\"" },
	{ "\xff", 0, "\"\\u00ff\"" },
	{ "\xc3(", 0, "\"\\u00c3(\"" },
	{ "\xed\xa0\x80", 0, "\"\\u00ed\\u00a0\\u0080\"" },
	{ "\xc0\x80", 0, "\"\\u00c0\\u0080\"" },
};

static void test_json_str(void)
{
	size_t i;

	for (i = 0; i < N(json_cases); i++) {
		struct q_buf b = { 0 };
		size_t len = json_cases[i].len ? json_cases[i].len
					       : strlen(json_cases[i].in);

		CU_ASSERT_EQUAL(q_json_str(&b, json_cases[i].in, len), 0);
		CU_ASSERT_PTR_NOT_NULL_FATAL(b.data);
		if (strcmp(b.data, json_cases[i].out) != 0)
			fprintf(stderr, "\n  json case %zu: got %s\n", i, b.data);
		CU_ASSERT_STRING_EQUAL(b.data, json_cases[i].out);
		q_buf_free(&b);
	}
}

static void test_boot_id(void)
{
	char buf[40];
	const char *err = NULL;
	const char *old = getenv("QKIT_BOOT_ID");
	char *saved = old != NULL ? strdup(old) : NULL;

	setenv("QKIT_BOOT_ID", "11111111-2222-3333-4444-555555555555", 1);
	CU_ASSERT_EQUAL(q_boot_id(buf, sizeof(buf), &err), 0);
	CU_ASSERT_STRING_EQUAL(buf, "11111111-2222-3333-4444-555555555555");
	CU_ASSERT_EQUAL(q_boot_id(buf, 10, &err), -1);
	CU_ASSERT_PTR_NOT_NULL(err);
	unsetenv("QKIT_BOOT_ID");
	if (access("/proc/sys/kernel/random/boot_id", R_OK) == 0) {
		CU_ASSERT_EQUAL(q_boot_id(buf, sizeof(buf), &err), 0);
		CU_ASSERT_EQUAL(strlen(buf), 36);
		CU_ASSERT_PTR_NULL(strchr(buf, '\n'));
	}
	if (saved != NULL)
		setenv("QKIT_BOOT_ID", saved, 1);
	free(saved);
}

static void test_pid_alive(void)
{
	pid_t pid;
	int st;

	CU_ASSERT_TRUE(q_pid_alive((long)getpid()));
	CU_ASSERT_TRUE(q_pid_alive(1));          /* EPERM still means alive */
	CU_ASSERT_FALSE(q_pid_alive(0));
	CU_ASSERT_FALSE(q_pid_alive(-1));
	CU_ASSERT_FALSE(q_pid_alive(1L << 40));
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0)
		_exit(0);
	CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
	CU_ASSERT_FALSE(q_pid_alive((long)pid));  /* reaped: gone */
}


/* ---- q_log ---- */

#define LOG_THREADS 4
#define LOG_LINES 200

static void *log_thread(void *arg)
{
	long id = (long)arg;
	int i;

	for (i = 0; i < LOG_LINES; i++)
		q_log("thread %ld line %d %s", id, i,
		      "padding-padding-padding-padding-padding-padding-padding");
	return NULL;
}

static void test_log(void)
{
	char *dir = t_tmpdir(), path[4096], *text, *line, *save = NULL;
	const char *err = NULL;
	struct stat st;
	pthread_t th[LOG_THREADS];
	regex_t re;
	size_t len, n = 0, nthread = 0, nchild = 0;
	pid_t pid;
	int i, status, go[2];

	CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
	q_log("before open: goes nowhere");
	CU_ASSERT_EQUAL_FATAL(q_log_open(dir, false, &err), 0);
	snprintf(path, sizeof(path), "%s/log", dir);
	CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 07777, 0700);
	snprintf(path, sizeof(path), "%s/log/mainlog", dir);
	CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 07777, 0600);

	errno = 1234;
	q_log("forged\n2000-01-01 00:00:00 [1] fake \x1b[31m\\ caf\xc3\xa9 %d", 7);
	CU_ASSERT_EQUAL(errno, 1234);             /* errno is preserved */
	/* the child is forked while this process has one thread (a fork
	 * beside threads that malloc can deadlock the child under ASan),
	 * and released through a pipe once the threads run */
	CU_ASSERT_EQUAL_FATAL(pipe(go), 0);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		char c;

		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(1);
		for (i = 0; i < LOG_LINES; i++)
			q_log("child line %d %s", i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
		_exit(0);
	}
	close(go[0]);
	for (i = 0; i < LOG_THREADS; i++)
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, log_thread,
						     (void *)(long)i), 0);
	CU_ASSERT_EQUAL(write(go[1], "g", 1), 1);
	close(go[1]);
	for (i = 0; i < LOG_THREADS; i++)
		pthread_join(th[i], NULL);
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	q_log_close();
	q_log("after close: goes nowhere");

	text = t_read_file(path, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(text);
	CU_ASSERT(len > 0 && text[len - 1] == '\n');
	CU_ASSERT_EQUAL_FATAL(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2} "
				      "[0-9]{2}:[0-9]{2}:[0-9]{2} \\[[0-9]+\\] "
				      "(thread [0-3] line [0-9]+ padding(-padding){6}|"
				      "child line [0-9]+ x{30}|forged.*)$",
				      REG_EXTENDED | REG_NOSUB), 0);
	for (line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		int m = regexec(&re, line, 0, NULL, 0);

		if (m != 0)
			fprintf(stderr, "\n  bad log line: %s\n", line);
		CU_ASSERT_EQUAL(m, 0);
		if (strstr(line, " thread ") != NULL)
			nthread++;
		else if (strstr(line, " child ") != NULL)
			nchild++;
		else
			CU_ASSERT_PTR_NOT_NULL(strstr(line, "] forged\\n2000-01-01 "
				"00:00:00 [1] fake \\x1b[31m\\\\ caf\xc3\xa9 7"));
		n++;
	}
	CU_ASSERT_EQUAL(nthread, LOG_THREADS * LOG_LINES);
	CU_ASSERT_EQUAL(nchild, LOG_LINES);
	CU_ASSERT_EQUAL(n, 1 + LOG_THREADS * LOG_LINES + LOG_LINES);
	CU_ASSERT_PTR_NULL(strstr(text, "goes nowhere"));
	regfree(&re);
	free(text);

	/* a spool directory that cannot hold a log */
	snprintf(path, sizeof(path), "%s/no/such/dir", dir);
	CU_ASSERT_EQUAL(q_log_open(path, false, &err), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no/such/dir/log"));
}

void suite_qutil(void)
{
	CU_pSuite s = CU_add_suite("qutil", NULL, NULL);

	CU_add_test(s, "q_buf add/printf/reserve/reset/free", test_buf);
	CU_add_test(s, "q_time_parse table", test_time_parse);
	CU_add_test(s, "q_time_format table", test_time_format);
	CU_add_test(s, "q_time_stamp", test_time_stamp);
	CU_add_test(s, "q_escape_term table", test_escape_term);
	CU_add_test(s, "q_fputs_safe", test_fputs_safe);
	CU_add_test(s, "q_json_str table", test_json_str);
	CU_add_test(s, "q_boot_id", test_boot_id);
	CU_add_test(s, "q_pid_alive", test_pid_alive);
	CU_add_test(s, "q_log: modes, format, escaping, threads and a child",
		    test_log);
}
