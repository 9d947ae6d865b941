/*
 * q_log.c - the main log (<spool>/log/mainlog) and, where asked, syslog.
 *
 * Invariants:
 *  - one line per q_log call, written with a single write(2) on an
 *    O_APPEND descriptor, so that lines of concurrent processes never mix;
 *  - the text is escaped: a newline becomes the two characters "\n",
 *    a backslash "\\", other control bytes, DEL, C1 controls and invalid
 *    UTF-8 "\xHH" (q_escape_term's rules), so bytes from mail or from
 *    servers can neither forge a line nor reach a terminal raw;
 *  - the state (descriptor, syslog flag) is guarded by a mutex: q_log may
 *    be called from several threads, and a fork() while another thread
 *    logs leaves the child usable (pthread_atfork); errno is preserved.
 *
 * Diagnostics: q_log_open reports mkdir/open failures; q_log itself has
 * nowhere to report to, so a failed write is dropped silently.
 * Weak spots: a line is formatted in memory; on ENOMEM it is cut to 1 KiB.
 */
#include "config.h"
#include "q/log.h"
#include "q/util.h"
#include "q_private.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static int log_fd = -1;
static bool log_syslog;
static _Atomic bool log_on;  /* log_fd >= 0 || log_syslog, read unlocked */
static _Atomic pid_t log_pid; /* getpid() once, not per line; 0 after fork */
static _Thread_local bool held;          /* q_log_hold */
static _Thread_local struct q_buf hold;  /* the held lines */

#define HOLD_MAX (64u * 1024)  /* held bytes written before the release */

/* fork() while another thread holds log_lock would leave the child's copy
 * locked for ever: hold it across fork so that both sides start unlocked. */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&log_lock);
}

static void atfork_release(void)
{
	pthread_mutex_unlock(&log_lock);
}

static void atfork_child(void)
{
	log_pid = 0;
	pthread_mutex_unlock(&log_lock);
}

static void log_init_once(void)
{
	pthread_atfork(atfork_prepare, atfork_release, atfork_child);
}

int q_log_open(const char *spool_dir, bool use_syslog, const char **error_r)
{
	struct q_buf path = { 0 };
	int fd;

	if (q_buf_printf(&path, "%s/log", spool_dir) < 0)
		return q_err(error_r, "out of memory");
	if (mkdir(path.data, 0700) < 0 && errno != EEXIST) {
		int e = errno;

		q_err(error_r, "mkdir %s: %s", path.data, strerror(e));
		q_buf_free(&path);
		return -1;
	}
	if (q_buf_adds(&path, "/mainlog") < 0) {
		q_buf_free(&path);
		return q_err(error_r, "out of memory");
	}
	fd = open(path.data, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY,
		  0600);
	if (fd < 0) {
		int e = errno;

		q_err(error_r, "open %s: %s", path.data, strerror(e));
		q_buf_free(&path);
		return -1;
	}
	q_buf_free(&path);

	pthread_once(&log_once, log_init_once);
	pthread_mutex_lock(&log_lock);
	if (log_fd >= 0)
		close(log_fd);
	log_fd = fd;
	if (use_syslog && !log_syslog)
		openlog(NULL, LOG_PID, LOG_MAIL);
	else if (!use_syslog && log_syslog)
		closelog();
	log_syslog = use_syslog;
	log_on = true;
	pthread_mutex_unlock(&log_lock);
	return 0;
}

void q_log_close(void)
{
	pthread_mutex_lock(&log_lock);
	if (log_fd >= 0)
		close(log_fd);
	log_fd = -1;
	if (log_syslog)
		closelog();
	log_syslog = false;
	log_on = false;
	pthread_mutex_unlock(&log_lock);
}

/* Append text escaped for the log: "\n" for newlines, the rest as
 * q_escape_term does. */
static int escape_text(struct q_buf *b, const char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		const char *nl = memchr(s + i, '\n', n - i);
		size_t end = nl != NULL ? (size_t)(nl - s) : n;

		if (q_escape_term(b, s + i, end - i, true) < 0)
			return -1;
		if (nl == NULL)
			break;
		if (q_buf_add(b, "\\n", 2) < 0)
			return -1;
		i = end + 1;
	}
	return 0;
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

/* Write what this thread holds (one write) and keep holding. */
static void q_log_release_keep(void)
{
	if (hold.len > 0) {
		pthread_mutex_lock(&log_lock);
		if (log_fd >= 0)
			write_all(log_fd, hold.data, hold.len);
		pthread_mutex_unlock(&log_lock);
	}
	q_buf_reset(&hold);
}

void q_log_hold(void)
{
	held = true;
}

void q_log_release(void)
{
	int saved_errno = errno;

	if (!held)
		return;
	q_log_release_keep();
	q_buf_free(&hold);
	held = false;
	errno = saved_errno;
}

void q_log(const char *fmt, ...)
{
	int saved_errno = errno;
	struct q_buf raw = { 0 }, line = { 0 };
	char stamp[32], small[1024];
	const char *text;
	size_t textlen, head;
	struct tm tm;
	time_t now;
	va_list ap;
	bool active;
	pid_t pid;

	active = log_on;
	if ((pid = log_pid) == 0)
		log_pid = pid = getpid();
	if (!active) {
		errno = saved_errno;
		return;
	}

	/* format the caller's text; on ENOMEM fall back to a cut copy */
	va_start(ap, fmt);
	{
		va_list aq;
		int n;

		va_copy(aq, ap);
		n = vsnprintf(small, sizeof(small), fmt, aq);
		va_end(aq);
		if (n < 0) {
			small[0] = '\0';
			n = 0;
		}
		text = small;
		textlen = (size_t)n < sizeof(small) ? (size_t)n : sizeof(small) - 1;
		if ((size_t)n >= sizeof(small) &&
		    q_buf_reserve(&raw, (size_t)n) == 0) {
			vsnprintf(raw.data, (size_t)n + 1, fmt, ap);
			raw.len = (size_t)n;
			text = raw.data;
			textlen = raw.len;
		}
	}
	va_end(ap);

	now = time(NULL);
	if (localtime_r(&now, &tm) == NULL ||
	    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(stamp, sizeof(stamp), "0000-00-00 00:00:00");
	if (q_buf_printf(&line, "%s [%ld] ", stamp, (long)pid) < 0)
		goto out;
	head = line.len;
	if (escape_text(&line, text, textlen) < 0 || q_buf_addc(&line, '\n') < 0)
		goto out;

	if (held && q_buf_add(&hold, line.data, line.len) == 0) {
		/* the file gets it at the release; syslog now */
		if (hold.len >= HOLD_MAX)
			q_log_release_keep();
		pthread_mutex_lock(&log_lock);
	} else {
		pthread_mutex_lock(&log_lock);
		if (log_fd >= 0)
			write_all(log_fd, line.data, line.len);
	}
	if (log_syslog) {
		line.data[line.len - 1] = '\0';
		syslog(LOG_INFO, "%s", line.data + head);
	}
	pthread_mutex_unlock(&log_lock);
out:
	q_buf_free(&raw);
	q_buf_free(&line);
	errno = saved_errno;
}
