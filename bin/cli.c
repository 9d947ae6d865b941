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
#include <getopt.h>
#include <langinfo.h>
#include <locale.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CLI_FLUSH_AT (256 * 1024)

struct cli cli;

static char stdout_buf[1 << 16];
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
	if (cli.out_errno == 0 && (fflush(stdout) != 0 || ferror(stdout)))
		cli.out_errno = errno != 0 ? errno : EIO;
	if (cli.out_errno != 0) {
		fprintf(stderr, "%s: writing standard output: %s\n", cli.prog,
			strerror(cli.out_errno));
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

static void (*cli_usage_fn)(FILE *);

int cli_sub_getopt(int argc, char **argv, const char *shortopts,
		   const struct option *longopts)
{
	int c;

	opterr = 0;
	c = getopt_long(argc, argv, shortopts, longopts, NULL);
	if (c == '?') {
		if (optopt != 0 && strchr(shortopts, optopt) != NULL)
			cli_usage_error("%s: option -%c needs a value", argv[0], optopt);
		if (optopt != 0)
			cli_usage_error("%s: unknown option -%c", argv[0], optopt);
		cli_usage_error("%s: unknown option %s", argv[0], argv[optind - 1]);
	}
	if (c == 'h') {
		cli_usage_fn(stdout);
		exit(cli_end(EX_OK));
	}
	return c;
}

/* Damaged hints moved aside (q_hints_set_notice_fn): said on stderr
 * whatever it is (a cron job's mail shows it), escaped. */
static void hints_notice(const char *text)
{
	struct q_buf b = { 0 };

	if (q_escape_term(&b, text, strlen(text), true) == 0 && b.data != NULL)
		cli_warn("warning: hints: %s", b.data);
	q_buf_free(&b);
}

int cli_start(const char *prog, int argc, char **argv, void (*usage)(FILE *))
{
	cli_usage_fn = usage;
	q_hints_set_notice_fn(hints_notice);
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

bool cli_spool_missing(void)
{
	struct q_conf *conf = cli_conf();
	struct stat st;

	return conf->spool_directory != NULL &&
		stat(conf->spool_directory, &st) < 0 && errno == ENOENT;
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

void cli_grow(size_t n)
{
	if (q_buf_reserve(&cli.out, n + 1) < 0)
		cli_oom();
}

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
	const char *p = cli.out.data;
	size_t left = cli.out.len;

	if (left == 0)
		return;
	flushed_last = last_significant();
	/* whatever went through stdio first (usage texts, q_conf_print) */
	fflush(stdout);
	while (left > 0 && cli.out_errno == 0) {
		ssize_t n = write(STDOUT_FILENO, p, left);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			cli.out_errno = errno;
			break;
		}
		p += n;
		left -= (size_t)n;
	}
	q_buf_reset(&cli.out);
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

void cli_pad(int n)
{
	static const char sp[] = "                                ";

	while (n > 0) {
		int k = n < (int)sizeof(sp) - 1 ? n : (int)sizeof(sp) - 1;

		cli_putn(sp, (size_t)k);
		n -= k;
	}
}

/* digits of v into the end of buf; returns the start */
static char *u64_digits(uint64_t v, char *end)
{
	char *p = end;

	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	return p;
}

void cli_put_u64(uint64_t v)
{
	char buf[24], *p = u64_digits(v, buf + sizeof(buf));

	cli_putn(p, (size_t)(buf + sizeof(buf) - p));
}

void cli_put_i64(long long v)
{
	if (v < 0) {
		cli_putc('-');
		cli_put_u64((uint64_t)0 - (uint64_t)v);
	} else {
		cli_put_u64((uint64_t)v);
	}
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
	cli_grow((size_t)n);
	va_start(ap, fmt);
	vsnprintf(cli.out.data + cli.out.len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	cli.out.len += (size_t)n;
}

/* length of the leading run that needs no escaping for a terminal */
static size_t plain_run(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] <= 0x7e &&
	       s[i] != '\\')
		i++;
	return i;
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
	size_t plain = plain_run(s, n);

	if (plain == n) {
		cli_putn(s, n);
		return;
	}
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
	cli_json_lit(key, strlen(key));
	cli_putc(':');
}

void cli_json_lit(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] <= 0x7e &&
	       s[i] != '"' && s[i] != '\\')
		i++;
	if (i == n) {
		if (cli.out.data == NULL || n + 3 >= cli.out.cap - cli.out.len)
			cli_grow(n + 2);
		cli.out.data[cli.out.len++] = '"';
		memcpy(cli.out.data + cli.out.len, s, n);
		cli.out.len += n;
		cli.out.data[cli.out.len++] = '"';
		cli.out.data[cli.out.len] = '\0';
		return;
	}
	if (q_json_str(&cli.out, s, n) < 0)
		cli_oom();
}

void cli_json_strn(const char *s, size_t n)
{
	json_sep();
	if (s == NULL) {
		cli_put("null");
		return;
	}
	cli_json_lit(s, n);
}

void cli_json_str(const char *s)
{
	cli_json_strn(s, s != NULL ? strlen(s) : 0);
}

void cli_json_int(long long v)
{
	json_sep();
	cli_put_i64(v);
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

/* "<whole>.<tenth><unit>" or "<whole><unit>" into buf */
static char *fmt_unit(char *buf, size_t size, uint64_t whole, int tenth, char unit)
{
	char tmp[32], *p = tmp + sizeof(tmp);
	size_t n;

	*--p = '\0';
	if (unit != '\0')
		*--p = unit;
	if (tenth >= 0) {
		*--p = (char)('0' + tenth);
		*--p = '.';
	}
	p = u64_digits(whole, p);
	n = (size_t)(tmp + sizeof(tmp) - p);
	if (size > 0) {
		if (n > size)
			n = size;
		memcpy(buf, p, n);
		buf[n - 1] = '\0';
	}
	return buf;
}

char *cli_fmt_age(long long secs, char *buf, size_t size)
{
	uint64_t m = secs > 0 ? (uint64_t)secs / 60 : 0;

	if (m <= 90)
		return fmt_unit(buf, size, m, -1, 'm');
	if ((m + 30) / 60 <= 72)
		return fmt_unit(buf, size, (m + 30) / 60, -1, 'h');
	return fmt_unit(buf, size, ((m + 30) / 60 + 12) / 24, -1, 'd');
}

/* v / unit rounded to the nearest, without overflow */
static uint64_t div_round(uint64_t v, uint64_t unit)
{
	return v / unit + (v % unit >= unit - unit / 2 ? 1 : 0);
}

char *cli_fmt_size(uint64_t v, char *buf, size_t size)
{
	static const char units[] = "KMGTPE";
	uint64_t unit = 1024, tenths;
	int u = 0;

	if (v < 1024)
		return fmt_unit(buf, size, v, -1, '\0');
	/* the unit in which the figure, rounded, stays below 1024 */
	while (div_round(v, unit) >= 1024 && units[u + 1] != '\0') {
		unit *= 1024;
		u++;
	}
	/* (v % unit) * 10 < 2^64 since unit <= 2^60 */
	tenths = v / unit * 10 + div_round(v % unit * 10, unit);
	if (tenths < 100)
		return fmt_unit(buf, size, tenths / 10, (int)(tenths % 10), units[u]);
	return fmt_unit(buf, size, div_round(v, unit), -1, units[u]);
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
	case 'X': return "failed";    /* its bounce not queued yet */
	case 'P': return "pending";
	default: return "unknown";
	}
}
