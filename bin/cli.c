/*
 * bin/cli.c - the part every qkit program shares (see cli.h).
 *
 * Owns: the global `cli` (one per process), the options before the
 * subcommand, the lazily loaded configuration, spool and hints, the
 * output buffer and the exit path.
 *
 * Invariants: stdout is written only through cli.out (flushed in pieces
 * of >= 64 KiB) or after cli_flush(); bytes from mail never reach stdout
 * unescaped except as JSON strings (q_json_str, which escapes every
 * control character).
 *
 * Diagnostics: one line on stderr "PROG: what", exit codes from
 * <sysexits.h> (64 usage, 66 no input, 71 ENOMEM, 74 I/O, 77 permission,
 * 78 configuration).
 */
#include "config.h"
#include "bin/cli.h"
#include "q/conf.h"
#include "q/spool.h"
#include "q/hints.h"

#include <errno.h>
#include <langinfo.h>
#include <locale.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CLI_FLUSH_AT (64 * 1024)

struct cli cli;

static char stdout_buf[1 << 20];
/* last character other than white space written before the last flush
 * of cli.out (for the JSON comma logic) */
static char flushed_last;

/* ------------------------------------------------------------------ */
/* messages and exits */

static void vmsg(const char *fmt, va_list ap)
{
	fflush(stdout);
	fprintf(stderr, "%s: ", cli.prog != NULL ? cli.prog : "qkit");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void cli_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
}

_Noreturn void cli_die(int code, const char *fmt, ...)
{
	va_list ap;

	cli_flush();
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	exit(code);
}

_Noreturn void cli_usage_error(const char *fmt, ...)
{
	va_list ap;

	cli_flush();
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	fprintf(stderr, "Try '%s --help'.\n", cli.prog);
	exit(EX_USAGE);
}

_Noreturn void cli_oom(void)
{
	/* no formatting: there may be no memory for it */
	fputs(cli.prog != NULL ? cli.prog : "qkit", stderr);
	fputs(": out of memory\n", stderr);
	_exit(EX_OSERR);
}

int cli_end(int code)
{
	cli_flush();
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "%s: writing standard output: %s\n", cli.prog,
			strerror(errno));
		if (code == EX_OK)
			code = EX_IOERR;
	}
	q_spool_close(&cli.spool);      /* closes the hints it owns */
	cli.hints = NULL;
	q_conf_free(&cli.conf);
	q_buf_free(&cli.out);
	return code;
}

/* ------------------------------------------------------------------ */
/* start-up */

int cli_start(const char *prog, int argc, char **argv, void (*usage)(FILE *))
{
	const char *cs;
	int i;

	cli.prog = prog;
	cli.now = time(NULL);
	setvbuf(stdout, stdout_buf, _IOFBF, sizeof(stdout_buf));
	/* only the character type: dates, numbers and messages stay "C" */
	setlocale(LC_CTYPE, "");
	cs = nl_langinfo(CODESET);
	cli.utf8 = cs != NULL && (strcmp(cs, "UTF-8") == 0 || strcmp(cs, "utf8") == 0);

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (a[0] != '-' || a[1] == '\0')
			break;
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			exit(cli_end(EX_OK));
		}
		if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
			printf("%s (qkit) %s\n", prog, PACKAGE_VERSION);
			exit(cli_end(EX_OK));
		}
		if (strncmp(a, "-C", 2) == 0) {
			if (a[2] != '\0') {
				cli.conf_arg = a + 2;
			} else if (i + 1 < argc) {
				cli.conf_arg = argv[++i];
			} else {
				cli_usage_error("option -C needs a file name");
			}
			if (*cli.conf_arg == '\0')
				cli_usage_error("option -C needs a file name");
			continue;
		}
		if (strncmp(a, "--config", 8) == 0 && (a[8] == '\0' || a[8] == '=')) {
			if (a[8] == '=')
				cli.conf_arg = a + 9;
			else if (i + 1 < argc)
				cli.conf_arg = argv[++i];
			else
				cli_usage_error("option --config needs a file name");
			continue;
		}
		cli_usage_error("unknown option '%s' (options go before the command)", a);
	}
	return i;
}

struct q_conf *cli_conf(void)
{
	const char *err = NULL;

	if (cli.conf != NULL)
		return cli.conf;
	cli.conf_file = q_conf_locate(cli.conf_arg);
	if (q_conf_load(cli.conf_file, &cli.conf, &err) < 0)
		cli_die(EX_CONFIG, "%s", err != NULL ? err : "configuration error");
	return cli.conf;
}

struct q_spool *cli_spool(bool create)
{
	struct q_conf *conf = cli_conf();
	const char *dir = conf->spool_directory, *err = NULL;
	struct stat st;

	if (cli.spool != NULL)
		return cli.spool;
	if (dir == NULL || *dir == '\0')
		cli_die(EX_CONFIG, "no spool_directory configured");
	if (stat(dir, &st) < 0) {
		if (errno == ENOENT && !create)
			cli_die(EX_NOINPUT, "spool directory %s does not exist "
				"(nothing submitted yet, or spool_directory is wrong%s%s)",
				dir, cli.conf_file != NULL ? " in " : "",
				cli.conf_file != NULL ? cli.conf_file : "");
		if (errno == EACCES)
			cli_die(EX_NOPERM, "spool directory %s: %s", dir, strerror(errno));
		if (errno != ENOENT)
			cli_die(EX_IOERR, "spool directory %s: %s", dir, strerror(errno));
	} else {
		if (!S_ISDIR(st.st_mode))
			cli_die(EX_CONFIG, "spool directory %s is not a directory", dir);
		if (st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
			if (q_spool_open(dir, create ? Q_SPOOL_CREATE : 0,
					 &cli.spool, &err) == 0)
				return cli.spool;   /* the library accepted it */
			cli_die(EX_NOPERM, "%s", err != NULL ? err : dir);
		}
	}
	if (q_spool_open(dir, create ? Q_SPOOL_CREATE : 0, &cli.spool, &err) < 0)
		cli_die(EX_IOERR, "%s", err != NULL ? err : dir);
	return cli.spool;
}

struct q_hints *cli_hints(void)
{
	struct q_spool *s = cli_spool(false);
	const char *err = NULL;

	if (cli.hints != NULL)
		return cli.hints;
	if (q_spool_hints(s, &cli.hints, &err) < 0)
		cli_die(EX_IOERR, "hints: %s", err != NULL ? err : "cannot open");
	return cli.hints;
}

/* ------------------------------------------------------------------ */
/* output */

static char last_significant(void)
{
	size_t i = cli.out.len;

	while (i > 0) {
		char c = cli.out.data[i - 1];

		if (c != ' ' && c != '\n' && c != '\t')
			return c;
		i--;
	}
	return flushed_last;
}

static void write_out(void)
{
	if (cli.out.len > 0) {
		flushed_last = last_significant();
		fwrite(cli.out.data, 1, cli.out.len, stdout);
		q_buf_reset(&cli.out);
	}
}

void cli_flush(void)
{
	write_out();
	fflush(stdout);
}

void cli_flush_maybe(void)
{
	if (cli.out.len >= CLI_FLUSH_AT)
		write_out();
}

void cli_putn(const char *s, size_t n)
{
	if (q_buf_add(&cli.out, s, n) < 0)
		cli_oom();
}

void cli_put(const char *s)
{
	cli_putn(s, strlen(s));
}

void cli_putc(char c)
{
	if (q_buf_addc(&cli.out, c) < 0)
		cli_oom();
}

void cli_printf(const char *fmt, ...)
{
	char small[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(small)) {
		cli_putn(small, (size_t)n);
		return;
	}
	if (q_buf_reserve(&cli.out, (size_t)n + 1) < 0)
		cli_oom();
	va_start(ap, fmt);
	vsnprintf(cli.out.data + cli.out.len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	cli.out.len += (size_t)n;
}

void cli_buf_safe(struct q_buf *b, const char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		const char *tab = memchr(s + i, '\t', n - i);
		size_t end = tab != NULL ? (size_t)(tab - s) : n;

		if (end > i && q_escape_term(b, s + i, end - i, cli.utf8) < 0)
			cli_oom();
		if (tab == NULL)
			break;
		if (q_buf_addc(b, '\t') < 0)
			cli_oom();
		i = end + 1;
	}
}

void cli_put_safe(const char *s, size_t n)
{
	cli_buf_safe(&cli.out, s, n);
}

void cli_puts_safe(const char *s)
{
	if (s != NULL)
		cli_put_safe(s, strlen(s));
}

/* ------------------------------------------------------------------ */
/* JSON */

static void json_sep(void)
{
	char last = last_significant();

	if (last != '\0' && last != '{' && last != '[' && last != ',' && last != ':')
		cli_putc(',');
}

void cli_json_open(char c)
{
	json_sep();
	cli_putc(c);
}

void cli_json_close(char c)
{
	cli_putc(c);
}

void cli_json_key(const char *key)
{
	json_sep();
	if (q_json_str(&cli.out, key, strlen(key)) < 0)
		cli_oom();
	cli_putc(':');
}

void cli_json_strn(const char *s, size_t n)
{
	json_sep();
	if (s == NULL) {
		cli_put("null");
		return;
	}
	if (q_json_str(&cli.out, s, n) < 0)
		cli_oom();
}

void cli_json_str(const char *s)
{
	cli_json_strn(s, s != NULL ? strlen(s) : 0);
}

void cli_json_int(long long v)
{
	json_sep();
	cli_printf("%lld", v);
}

void cli_json_bool(bool v)
{
	json_sep();
	cli_put(v ? "true" : "false");
}

void cli_json_kstr(const char *key, const char *s)
{
	cli_json_key(key);
	cli_json_str(s);
}

void cli_json_kint(const char *key, long long v)
{
	cli_json_key(key);
	cli_json_int(v);
}

void cli_json_kbool(const char *key, bool v)
{
	cli_json_key(key);
	cli_json_bool(v);
}

/* ------------------------------------------------------------------ */
/* formatting */

char *cli_fmt_age(long long secs, char *buf, size_t size)
{
	long long m = secs > 0 ? secs / 60 : 0;

	if (m <= 90)
		snprintf(buf, size, "%lldm", m);
	else if ((m + 30) / 60 <= 72)
		snprintf(buf, size, "%lldh", (m + 30) / 60);
	else
		snprintf(buf, size, "%lldd", ((m + 30) / 60 + 12) / 24);
	return buf;
}

char *cli_fmt_size(uint64_t v, char *buf, size_t size)
{
	static const char units[] = "KMGTPE";
	double d;
	int u;

	if (v < 1024) {
		snprintf(buf, size, "%u", (unsigned)v);
		return buf;
	}
	d = (double)v / 1024.0;
	/* the unit in which the rounded figure stays below 1024 */
	for (u = 0; d >= 1023.5 && units[u + 1] != '\0'; u++)
		d /= 1024.0;
	/* one decimal below 10 (as exim -bp does), none above */
	if (d < 9.95)
		snprintf(buf, size, "%.1f%c", d, units[u]);
	else
		snprintf(buf, size, "%.0f%c", d, units[u]);
	return buf;
}

long long cli_time_arg(const char *opt, const char *s)
{
	long long v;

	if (q_time_parse(s, &v) < 0)
		cli_usage_error("option %s: '%s' is not a time (examples: 90s, 30m, 2h, 1d)",
				opt, s);
	return v;
}

const char *cli_state_name(char state)
{
	switch (state) {
	case 'D': return "delivered";
	case 'F': return "failed";
	case 'P': return "pending";
	default: return "unknown";
	}
}
