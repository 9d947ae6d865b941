/*
 * tests/test_tlib.c - the test helpers themselves: t_run (stdin, both
 * streams, exit status, signals, big outputs, environment), t_tmpdir,
 * t_write_file / t_read_file, t_top.  Uses /bin/cat, /bin/false,
 * /usr/bin/env and the unit binary itself (/proc/self/exe, driven by
 * QKIT_TLIB_CHILD); never a shell.
 */
#include "config.h"
#include "tests/tlib.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

static void test_run_cat_stdin(void)
{
	static const char *const inputs[] = {
		"", "x", "hello\nworld\n", "no newline at end", "a\0b",
	};
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		const char *const argv[] = { "/bin/cat", NULL };
		struct t_out o;

		CU_ASSERT_EQUAL_FATAL(t_run(argv, inputs[i], &o), 0);
		CU_ASSERT_EQUAL(o.status, 0);
		CU_ASSERT_EQUAL(o.outlen, strlen(inputs[i]));
		CU_ASSERT_STRING_EQUAL(o.out, inputs[i]);
		CU_ASSERT_EQUAL(o.errlen, 0);
		CU_ASSERT_PTR_NOT_NULL(o.err);
		t_out_free(&o);
		CU_ASSERT_PTR_NULL(o.out);
	}
}

/* More than any pipe buffer in both directions: a deadlock would hang. */
static void test_run_cat_big(void)
{
	size_t n = 3u << 20;
	char *big = malloc(n + 1);
	const char *const argv[] = { "/bin/cat", NULL };
	struct t_out o;

	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	for (size_t i = 0; i < n; i++)
		big[i] = (char)('a' + i % 26);
	big[n - 1] = '\n';
	big[n] = '\0';
	CU_ASSERT_EQUAL_FATAL(t_run(argv, big, &o), 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_EQUAL(o.outlen, n);
	CU_ASSERT(o.outlen == n && memcmp(o.out, big, n) == 0);
	t_out_free(&o);
	free(big);
}

static void test_run_status(void)
{
	const char *const f[] = { "/bin/false", NULL };
	const char *const t[] = { "/bin/true", NULL };
	struct t_out o;

	CU_ASSERT_EQUAL_FATAL(t_run(f, NULL, &o), 0);
	CU_ASSERT_EQUAL(o.status, 1);
	CU_ASSERT_EQUAL(o.outlen, 0);
	t_out_free(&o);
	CU_ASSERT_EQUAL_FATAL(t_run(t, NULL, &o), 0);
	CU_ASSERT_EQUAL(o.status, 0);
	t_out_free(&o);
	/* bare name: looked up in $PATH */
	const char *const fp[] = { "false", NULL };
	CU_ASSERT_EQUAL_FATAL(t_run(fp, NULL, &o), 0);
	CU_ASSERT_EQUAL(o.status, 1);
	t_out_free(&o);
}

/* stderr is captured apart from stdout; a missing file gives cat's
 * status 1 and a message naming it. */
static void test_run_stderr(void)
{
	const char *const argv[] = { "/bin/cat", "/nonexistent/qkit-x", NULL };
	struct t_out o;

	CU_ASSERT_EQUAL_FATAL(t_run(argv, NULL, &o), 0);
	CU_ASSERT_EQUAL(o.status, 1);
	CU_ASSERT_EQUAL(o.outlen, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "/nonexistent/qkit-x"));
	CU_ASSERT_EQUAL(o.errlen, strlen(o.err));
	t_out_free(&o);
}

/* The child does not read its stdin: no SIGPIPE for us, status kept. */
static void test_run_unread_stdin(void)
{
	const char *const argv[] = { "/bin/false", NULL };
	size_t n = 1u << 20;
	char *big = malloc(n + 1);
	struct t_out o;

	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	memset(big, 'x', n);
	big[n] = '\0';
	CU_ASSERT_EQUAL_FATAL(t_run(argv, big, &o), 0);
	CU_ASSERT_EQUAL(o.status, 1);
	t_out_free(&o);
	free(big);
}

/* The unit binary itself (/proc/self/exe) is the child: the constructor
 * below acts on QKIT_TLIB_CHILD before main runs. */
static void test_run_signal(void)
{
	const char *const argv[] = { "/proc/self/exe", NULL };
	const char *const env[] = { "QKIT_TLIB_CHILD=signal", NULL };
	struct t_out o;

	CU_ASSERT_EQUAL_FATAL(t_run_env(argv, env, NULL, &o), 0);
	CU_ASSERT_EQUAL(o.status, 128 + SIGTERM);
	t_out_free(&o);
}

static void test_run_missing(void)
{
	const char *const argv[] = { "/nonexistent/qkit-prog", NULL };
	const char *const none[] = { NULL };
	struct t_out o;

	CU_ASSERT_EQUAL(t_run(argv, "x", &o), -1);
	CU_ASSERT_PTR_NULL(o.out);
	CU_ASSERT_EQUAL(t_run(none, NULL, &o), -1);
	t_out_free(&o);
}

static void test_run_env(void)
{
	const char *const argv[] = { "/usr/bin/env", NULL };
	const char *const extra[] = { "QKIT_TLIB_A=1", "HOME=/qkit-home",
		NULL };
	struct t_out o;

	CU_ASSERT_EQUAL_FATAL(t_run_env(argv, extra, NULL, &o), 0);
	CU_ASSERT_EQUAL(o.status, 0);
	/* added, and replaced rather than duplicated */
	int n_a = 0, n_home = 0, home_ok = 0;
	for (const char *l = o.out; *l != '\0'; l = strchr(l, '\n') + 1) {
		n_a += strncmp(l, "QKIT_TLIB_A=", 12) == 0;
		n_home += strncmp(l, "HOME=", 5) == 0;
		home_ok += strncmp(l, "HOME=/qkit-home\n", 16) == 0;
		if (strchr(l, '\n') == NULL)
			break;
	}
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "QKIT_TLIB_A=1\n"));
	CU_ASSERT_EQUAL(n_a, 1);
	CU_ASSERT_EQUAL(n_home, 1);
	CU_ASSERT_EQUAL(home_ok, 1);
	if (getenv("PATH") != NULL)
		CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "PATH="));
	t_out_free(&o);
}

static void test_tmpdir(void)
{
	char *a = t_tmpdir(), *b = t_tmpdir();
	struct stat st;
	char path[4096];
	size_t len = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	CU_ASSERT_STRING_NOT_EQUAL(a, b);
	CU_ASSERT_EQUAL_FATAL(stat(a, &st), 0);
	CU_ASSERT(S_ISDIR(st.st_mode));
	CU_ASSERT_EQUAL(st.st_mode & 07777, 0700);
	CU_ASSERT_EQUAL(st.st_uid, getuid());

	/* a file and a subdirectory inside it */
	snprintf(path, sizeof(path), "%s/sub", a);
	CU_ASSERT_EQUAL(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/sub/f", a);
	CU_ASSERT_EQUAL(t_write_file(path, "one\ntwo\n"), 0);
	char *s = t_read_file(path, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(len, 8);
	CU_ASSERT_STRING_EQUAL(s, "one\ntwo\n");
	free(s);
	CU_ASSERT_EQUAL(stat(path, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
	CU_ASSERT_EQUAL(t_write_file(path, ""), 0);
	s = t_read_file(path, NULL);
	CU_ASSERT(s != NULL && s[0] == '\0');
	free(s);
	CU_ASSERT_PTR_NULL(t_read_file("/nonexistent/qkit-x", NULL));
}

/* A child process (the unit binary, see the constructor) makes a
 * directory, writes into it, prints its path and exits: the directory is
 * gone afterwards; with QKIT_KEEP_TMP it stays. */
static void test_tmpdir_removed_at_exit(void)
{
	const char *const argv[] = { "/proc/self/exe", NULL };
	const char *const env[] = { "QKIT_TLIB_CHILD=tmpdir", NULL };
	const char *const keep[] = { "QKIT_TLIB_CHILD=tmpdir",
		"QKIT_KEEP_TMP=1", NULL };
	struct t_out o;
	struct stat st;
	char path[4096];

	CU_ASSERT_EQUAL_FATAL(t_run_env(argv, env, NULL, &o), 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_FATAL(o.outlen > 1 && o.out[0] == '/');
	CU_ASSERT_EQUAL(stat(o.out, &st), -1);
	CU_ASSERT_EQUAL(errno, ENOENT);
	t_out_free(&o);

	CU_ASSERT_EQUAL_FATAL(t_run_env(argv, keep, NULL, &o), 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_FATAL(o.outlen > 1 && o.out[0] == '/');
	CU_ASSERT_EQUAL(stat(o.out, &st), 0);
	snprintf(path, sizeof(path), "%s/f", o.out);
	CU_ASSERT_EQUAL(unlink(path), 0);
	CU_ASSERT_EQUAL(rmdir(o.out), 0);
	t_out_free(&o);
}

/* A forked child that exits must not remove its parent's directories.
 * The child turns LeakSanitizer off (hook below): at its exit it would
 * otherwise report the leaks of earlier tests a second time, here. */
static volatile int in_fork_child;

int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void)
{
	return in_fork_child;
}

static void test_tmpdir_fork(void)
{
	char *a = t_tmpdir();
	struct stat st;
	int wst;
	pid_t pid;

	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		in_fork_child = 1;
		exit(0);        /* runs the atexit handlers */
	}
	CU_ASSERT_EQUAL(waitpid(pid, &wst, 0), pid);
	CU_ASSERT(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
	CU_ASSERT_EQUAL(stat(a, &st), 0);
}

__attribute__((constructor)) static void tlib_child(void)
{
	const char *what = getenv("QKIT_TLIB_CHILD");
	char path[4096];
	char *d;

	if (what == NULL)
		return;
	if (strcmp(what, "signal") == 0) {
		signal(SIGTERM, SIG_DFL);
		raise(SIGTERM);
		_exit(3);
	}
	if (strcmp(what, "tmpdir") == 0) {
		if ((d = t_tmpdir()) == NULL)
			exit(2);
		snprintf(path, sizeof(path), "%s/f", d);
		if (t_write_file(path, "x") < 0)
			exit(2);
		fputs(d, stdout);
		exit(0);
	}
	_exit(4);
}

static void test_top(void)
{
	const char *top = t_top();
	struct stat st;

	CU_ASSERT_PTR_NOT_NULL_FATAL(top);
	CU_ASSERT_EQUAL(stat(top, &st), 0);
	CU_ASSERT(S_ISDIR(st.st_mode));
	CU_ASSERT_PTR_NULL(t_bin("qkit-no-such-program"));
}

void suite_tlib(void)
{
	CU_pSuite s = CU_add_suite("tlib", NULL, NULL);

	if (s == NULL)
		return;
	CU_add_test(s, "t_run: cat echoes stdin", test_run_cat_stdin);
	CU_add_test(s, "t_run: 3 MiB through cat", test_run_cat_big);
	CU_add_test(s, "t_run: exit status", test_run_status);
	CU_add_test(s, "t_run: stderr apart", test_run_stderr);
	CU_add_test(s, "t_run: unread stdin", test_run_unread_stdin);
	CU_add_test(s, "t_run: killed child", test_run_signal);
	CU_add_test(s, "t_run: missing program", test_run_missing);
	CU_add_test(s, "t_run_env", test_run_env);
	CU_add_test(s, "t_tmpdir and files", test_tmpdir);
	CU_add_test(s, "t_tmpdir removed at exit", test_tmpdir_removed_at_exit);
	CU_add_test(s, "t_tmpdir kept after fork", test_tmpdir_fork);
	CU_add_test(s, "t_top, t_bin", test_top);
}
