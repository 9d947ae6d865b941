/*
 * bin/cli.h - what every qkit program shares: the options that come
 * before the subcommand (-C FILE, --help, --version), loading the
 * configuration, opening the spool and the hints, exit codes, one big
 * buffered output, JSON and human formatting, escaped printing of bytes
 * that come from mail or from servers.
 *
 * Programs are small and run once: the helpers that cannot go on (bad
 * configuration, spool that cannot be opened, ENOMEM) print one line
 * "PROG: what" on stderr and exit with a <sysexits.h> code. Everything
 * else returns.
 */
#ifndef QKIT_CLI_H
#define QKIT_CLI_H

#include "q/common.h"
#include "q/util.h"

#include <stdio.h>
#include <string.h>
#include <sysexits.h>

struct q_conf;
struct q_spool;
struct q_hints;

struct cli {
	const char *prog;          /* "qctl", "qhints" */
	const char *conf_arg;      /* -C FILE, or NULL */
	const char *conf_file;     /* the file read, or NULL (built-in defaults) */
	struct q_conf *conf;       /* after cli_conf() */
	struct q_spool *spool;     /* after cli_spool() */
	struct q_hints *hints;     /* after cli_hints() */
	bool utf8;                 /* the locale's charset is UTF-8 */
	time_t now;                /* time at start */
	struct q_buf out;          /* pending standard output */
	int out_errno;             /* first error writing it, or 0 */
};

extern struct cli cli;

/* Set up cli, parse the options before the subcommand and return the
 * index of the subcommand in argv (argc when there is none). --help
 * calls usage(stdout) and exits 0; --version prints "PROG (qkit) VERSION"
 * and exits 0; a bad option exits 64. */
int cli_start(const char *prog, int argc, char **argv, void (*usage)(FILE *));

/* getopt_long over a subcommand's argv (argv[0] is the command name),
 * opterr off: returns the option, -1 at the end; a missing value or an
 * unknown option exits 64 naming the command; 'h' (give it as an option
 * to mean --help) prints the program's usage and exits 0. */
struct option;
int cli_sub_getopt(int argc, char **argv, const char *shortopts,
		   const struct option *longopts);

/* Load the configuration once (-C, $QKIT_CONFIG, SYSCONFDIR/qkit.conf,
 * defaults). On an error prints "PROG: FILE:LINE: what" and exits 78. */
struct q_conf *cli_conf(void);

/* Open the configured spool once (create the tree when create is true).
 * Exits 66 when it does not exist and create is false, 77 when it is not
 * ours or open to others, 74 on other failures. */
struct q_spool *cli_spool(bool create);

/* true when the configured spool directory does not exist (yet): for
 * commands that have nothing to do then, such as cron's qhints tidy. */
bool cli_spool_missing(void);

/* The spool's hints environment; exits 74 when it cannot be opened. A
 * notice from the library (environment rebuilt) is printed on stderr. */
struct q_hints *cli_hints(void);

/* Messages on stderr, prefixed with "PROG: ". */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void cli_die(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Usage error: the message, then "Try 'PROG --help'.", exit 64. */
_Noreturn void cli_usage_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
/* Out of memory: exit 71 (EX_OSERR). */
_Noreturn void cli_oom(void);

/* Flush everything (cli.out, stdout), close the spool and free the
 * configuration; returns code, or 74 when standard output could not be
 * written. Call as: return cli_end(code); */
int cli_end(int code);

/* ---- output ----
 * Text is built in cli.out and written to file descriptor 1 with
 * write(2) in pieces of 256 KiB or more (after stdio's own buffer is
 * flushed): no system call per line. The small appenders are inline with
 * a memcpy fast path, since a listing calls them millions of times.
 * Each exits 71 on ENOMEM. */
void cli_grow(size_t n);                   /* room for n more bytes */

static inline void cli_putn(const char *s, size_t n)
{
	if (cli.out.data == NULL || n >= cli.out.cap - cli.out.len)
		cli_grow(n);
	memcpy(cli.out.data + cli.out.len, s, n);
	cli.out.len += n;
	cli.out.data[cli.out.len] = '\0';
}

static inline void cli_put(const char *s)
{
	cli_putn(s, strlen(s));
}

static inline void cli_putc(char c)
{
	if (cli.out.data == NULL || cli.out.cap - cli.out.len < 2)
		cli_grow(1);
	cli.out.data[cli.out.len++] = c;
	cli.out.data[cli.out.len] = '\0';
}

/* n spaces */
void cli_pad(int n);
/* decimal numbers, no printf */
void cli_put_u64(uint64_t v);
void cli_put_i64(long long v);
void cli_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Text that comes from mail, a server or the spool: escaped for a
 * terminal (q_escape_term; TAB passes). Used whether or not stdout is a
 * terminal, so a script sees what a person sees. Plain printable ASCII
 * is copied as it is (fast path). */
void cli_put_safe(const char *s, size_t n);
void cli_puts_safe(const char *s);         /* NULL prints nothing */
/* Write cli.out out when it holds 256 KiB or more. */
void cli_flush_maybe(void);
/* Write cli.out out, and flush stdio's stdout. */
void cli_flush(void);

/* The same escaping into another buffer (to build one padded field). */
void cli_buf_safe(struct q_buf *b, const char *s, size_t n);

/* ---- JSON (into cli.out) ----
 * A comma is written before a member or element when the previous
 * character is not '{', '[' or ','. Strings go through q_json_str
 * (exact bytes, invalid UTF-8 as \u00XX). */
void cli_json_open(char c);                    /* '{' or '[' */
void cli_json_close(char c);                   /* '}' or ']' */
void cli_json_key(const char *key);            /* ,"key": */
void cli_json_str(const char *s);              /* value; NULL -> null */
void cli_json_strn(const char *s, size_t n);
void cli_json_int(long long v);
void cli_json_bool(bool v);
void cli_json_kstr(const char *key, const char *s);
void cli_json_kint(const char *key, long long v);
void cli_json_kbool(const char *key, bool v);
/* Just the string literal (no separator logic), with a fast path for
 * printable ASCII: for hand-written hot loops. */
void cli_json_lit(const char *s, size_t n);

/* ---- human formatting ---- */
/* Age the way exim -bp shows it: minutes up to 90 ("25m"), then hours
 * up to 72 ("3h"), then days ("2d"), rounded to the nearest. Negative
 * ages count as 0. Integer arithmetic only (no printf). */
char *cli_fmt_age(long long secs, char *buf, size_t size);
/* Size: "512", "2.9K", "123K", "1.2M", "45M", "3.1G": one decimal
 * below 10 units, rounded to the nearest (as printf's %.1f/%.0f would).
 * Integer arithmetic only. */
char *cli_fmt_size(uint64_t bytes, char *buf, size_t size);

/* ---- small things ---- */
/* Parse an Exim time value for option opt; exits 64 when bad. */
long long cli_time_arg(const char *opt, const char *s);
/* "name of the recipient state": "pending", "delivered", "failed". */
const char *cli_state_name(char state);

#endif
