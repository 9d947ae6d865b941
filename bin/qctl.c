/*
 * bin/qctl.c - submit, inspect and control the queue.
 *
 *   qctl [-C FILE] submit [-f SENDER] [-t] [RCPT...] < message
 *   qctl [-C FILE] list [-f RE] [-r RE] [-o AGE] [-y AGE] [-z|-x] [-c|-i|--json]
 *   qctl [-C FILE] show ID [--headers|--body|--log|--json]
 *   qctl [-C FILE] freeze|thaw|rm ID...
 *   qctl [-C FILE] retry [PATTERN] [--json] | retry clear KEY...
 *   qctl [-C FILE] stats [--json]
 *   qctl [-C FILE] sessions [--json]
 *   qctl [-C FILE] config
 *
 * Owns nothing persistent: every change goes through libq (the spool's
 * per-message lock, the hints transactions). Invariants: nothing is
 * written before every address of a submission is checked; every byte
 * that came from mail is escaped on output (cli_put_safe) or written as
 * an exact JSON string; a message locked by a delivery is never changed.
 *
 * Listing is one pass over the queue index (q_spool_list), which carries
 * every recipient, so no -H file is opened; the output is built in one
 * buffer and written in large pieces. `list -c` without filters reads
 * only the index's record count (q_spool_count), which can be stale by
 * the few messages whose index update failed (the index is a hint).
 *
 * Exit codes (<sysexits.h>): 0 ok, 64 usage, 65 bad data (nothing
 * spooled), 66 no such message, 74 I/O, 75 a message was busy, 78
 * configuration.
 */
#include "config.h"
#include "bin/cli.h"
#include "q/addr.h"
#include "q/conf.h"
#include "q/hints.h"
#include "q/retry.h"
#include "q/spool.h"
#include "q/log.h"
#include "q/runner.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <getopt.h>
#include <pwd.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fputs(
"usage: qctl [-C FILE] COMMAND [ARGS]\n"
"Submit, inspect and control the qkit mail queue.\n"
"\n"
"Options before the command:\n"
"  -C FILE         configuration file (else $QKIT_CONFIG, else " SYSCONFDIR "/qkit.conf)\n"
"  --help          this text\n"
"  --version       print the version\n"
"\n"
"Commands:\n"
"  submit [-f SENDER] [-t] [RCPT...] < MESSAGE\n"
"                  spool a message read from standard input; print its id\n"
"                  (-t: also the To:, Cc: and Bcc: addresses; Bcc: is removed)\n"
"  list [-f RE] [-r RE] [-o AGE] [-y AGE] [-z|-x] [-c|-i|--json]\n"
"                  list the queue like mailq; -f sender and -r recipient regex,\n"
"                  -o older / -y younger than AGE (30m, 2h, 1d), -z frozen only,\n"
"                  -x not frozen, -c count, -i ids only\n"
"  show ID [--headers|--body|--log|--json]\n"
"                  envelope and per-recipient state of a message\n"
"  freeze ID...    stop delivering messages\n"
"  thaw ID...      resume delivering messages\n"
"  rm ID...        remove messages (no bounce is sent)\n"
"  retry [PATTERN] [--json]\n"
"                  retry records (like exinext); PATTERN: substring or glob of the key\n"
"  retry clear KEY...\n"
"                  delete retry records (the keys are tried at the next run)\n"
"  stats [--json]  messages and bytes per destination domain and age (like qshape)\n"
"  sessions [--json]\n"
"                  live SMTP sessions of the delivery runner\n"
"  flush [-v] [-P N] [--json] [ID...|-R DOMAIN]\n"
"                  deliver now, ignoring retry times (the queue run of qrun -f,\n"
"                  or just these messages, or one domain's recipients)\n"
"  config          print the effective configuration\n"
"\n"
"Exit status: 0 ok, 64 usage, 65 bad data, 66 no such message, 74 I/O error,\n"
"75 message busy (being delivered), 78 configuration error.\n", f);
}

/* ------------------------------------------------------------------ */
/* option parsing for subcommands */


/* "<addr>" -> "addr" (in place; the command line's copy) */
static char *strip_brackets(char *s)
{
	size_t n = strlen(s);

	if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
		s[n - 1] = '\0';
		return s + 1;
	}
	return s;
}

/* ------------------------------------------------------------------ */
/* submit */

static int read_all(int fd, struct q_buf *b)
{
	for (;;) {
		ssize_t n;

		if (q_buf_reserve(b, 65536) < 0)
			cli_oom();
		n = read(fd, b->data + b->len, b->cap - b->len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		b->len += (size_t)n;
		b->data[b->len] = '\0';
	}
	return 0;
}

static char *default_sender(void)
{
	struct q_conf *conf = cli_conf();
	const struct passwd *pw = getpwuid(geteuid());
	char host[256] = "localhost";
	const char *h = conf->primary_hostname;
	struct q_buf b = { 0 };

	if (h == NULL || *h == '\0') {
		if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
			strcpy(host, "localhost");
		host[sizeof(host) - 1] = '\0';
		h = host;
	}
	if (q_buf_printf(&b, "%s@%s", pw != NULL ? pw->pw_name : "nobody", h) < 0)
		cli_oom();
	return b.data;
}

static int cmd_submit(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct q_buf raw = { 0 }, data = { 0 };
	const char *sender = NULL, *err = NULL;
	char *defsender = NULL, **hdr = NULL;
	size_t nhdr = 0, nrcpt = 0, i, j, bad = 0;
	const char **rcpts;
	bool extract = false;
	char id[Q_ID_LEN + 1];
	struct q_newmsg m;
	int c;

	while ((c = cli_sub_getopt(argc, argv, "f:th", lo)) != -1) {
		switch (c) {
		case 'f': sender = strip_brackets(optarg); break;
		case 't': extract = true; break;
		}
	}
	if (optind == argc && !extract)
		cli_usage_error("submit: no recipients (give addresses, or -t to take "
				"them from the To:, Cc: and Bcc: fields)");
	/* the configuration first: a bad one must stop us before stdin is read */
	cli_conf();

	if (read_all(0, &raw) < 0)
		cli_die(EX_IOERR, "reading the message from standard input: %s",
			strerror(errno));
	if (q_msg_canonicalize(raw.data != NULL ? raw.data : "", raw.len, &data,
			       &err) < 0)
		cli_die(EX_DATAERR, "message refused, nothing spooled: %s", err);
	q_buf_free(&raw);
	if (extract && q_msg_header_rcpts(&data, &hdr, &nhdr, &err) < 0)
		cli_die(EX_DATAERR, "message refused, nothing spooled: %s", err);

	rcpts = calloc((size_t)(argc - optind) + nhdr + 1, sizeof(*rcpts));
	if (rcpts == NULL)
		cli_oom();
	for (i = (size_t)optind; i < (size_t)argc; i++)
		rcpts[nrcpt++] = strip_brackets(argv[i]);
	for (i = 0; i < nhdr; i++)
		rcpts[nrcpt++] = hdr[i];
	/* drop exact duplicates, keeping the first */
	for (i = 0, j = 0; i < nrcpt; i++) {
		size_t k;

		for (k = 0; k < j; k++)
			if (strcmp(rcpts[k], rcpts[i]) == 0)
				break;
		if (k == j)
			rcpts[j++] = rcpts[i];
	}
	nrcpt = j;
	if (nrcpt == 0)
		cli_usage_error("submit: no recipients (none given, none found by -t)");

	if (sender == NULL)
		sender = defsender = default_sender();
	if (q_addr_check(sender, true, &err) < 0) {
		cli_warn("bad sender address '%s': %s", sender, err);
		bad++;
	}
	for (i = 0; i < nrcpt; i++) {
		if (q_addr_check(rcpts[i], false, &err) < 0) {
			fflush(stdout);
			fprintf(stderr, "%s: bad recipient address '", cli.prog);
			q_fputs_safe(rcpts[i], stderr);
			fprintf(stderr, "': %s\n", err);
			bad++;
		}
	}
	if (bad > 0)
		cli_die(EX_DATAERR, "nothing spooled (%zu bad address%s)", bad,
			bad == 1 ? "" : "es");

	memset(&m, 0, sizeof(m));
	m.sender = sender;
	m.rcpts = rcpts;
	m.nrcpt = nrcpt;
	m.data = data.data != NULL ? data.data : "";
	m.len = data.len;
	if (q_spool_create(cli_spool(true), &m, 0, id, &err) < 0)
		cli_die(EX_IOERR, "spooling failed, nothing spooled: %s", err);

	if (q_log_open(q_spool_dir(cli.spool), false, NULL) == 0) {
		q_log("%s <= <%s> qctl submit, %zu recipient%s, %zu bytes", id,
		      sender, nrcpt, nrcpt == 1 ? "" : "s", data.len);
		q_log_close();
	}
	cli_printf("%s\n", id);

	free(rcpts);
	q_strv_free(&hdr, nhdr);
	free(defsender);
	q_buf_free(&data);
	return EX_OK;
}

/* ------------------------------------------------------------------ */
/* list */

struct list_ctx {
	bool has_f, has_r;
	regex_t fre, rre;
	long long older, younger;     /* -1 = no filter */
	int frozen;                   /* -1 any, 1 frozen only, 0 not frozen */
	bool count, ids, json;
	size_t n;
	struct q_buf scratch;
};

static bool rcpt_matches(struct list_ctx *lc, const char *rcpts)
{
	const char *p = rcpts;

	while (p != NULL && *p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);

		if (len >= 2) {
			q_buf_reset(&lc->scratch);
			if (q_buf_add(&lc->scratch, p + 2, len - 2) < 0)
				cli_oom();
			if (regexec(&lc->rre, lc->scratch.data, 0, NULL, 0) == 0)
				return true;
		}
		p = nl != NULL ? nl + 1 : NULL;
	}
	return false;
}

static bool list_match(struct list_ctx *lc, const struct q_index_rec *r)
{
	long long age = (long long)(cli.now - r->arrival);
	bool frozen = (r->flags & Q_ENV_FROZEN) != 0;

	if (lc->frozen >= 0 && frozen != (lc->frozen == 1))
		return false;
	if (lc->older >= 0 && age <= lc->older)
		return false;
	if (lc->younger >= 0 && age >= lc->younger)
		return false;
	if (lc->has_f && regexec(&lc->fre, r->sender != NULL ? r->sender : "",
				 0, NULL, 0) != 0)
		return false;
	if (lc->has_r && !rcpt_matches(lc, r->rcpts))
		return false;
	return true;
}

/* a string literal, its length known at compile time */
#define PUTLIT(s) cli_putn(s, sizeof(s) - 1)

/* The two functions below run once per message of a listing: they write
 * into cli.out directly (no printf, no JSON separator logic). */
static void list_json(const struct q_index_rec *r)
{
	const char *p = r->rcpts, *sender = r->sender != NULL ? r->sender : "";
	bool first = true;

	PUTLIT("{\"id\":\"");
	cli_putn(r->id, strlen(r->id));
	PUTLIT("\",\"sender\":");
	cli_json_lit(sender, strlen(sender));
	PUTLIT(",\"arrival\":");
	cli_put_i64((long long)r->arrival);
	PUTLIT(",\"age\":");
	cli_put_i64((long long)(cli.now - r->arrival));
	PUTLIT(",\"size\":");
	cli_put_u64(r->size);
	if ((r->flags & Q_ENV_FROZEN) != 0)
		PUTLIT(",\"frozen\":true,\"next_try\":");
	else
		PUTLIT(",\"frozen\":false,\"next_try\":");
	cli_put_i64((long long)r->next_try);
	PUTLIT(",\"recipients\":[");
	while (p != NULL && *p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);

		if (len >= 2) {
			if (!first)
				cli_putc(',');
			first = false;
			PUTLIT("{\"address\":");
			cli_json_lit(p + 2, len - 2);
			switch (p[0]) {
			case 'D': PUTLIT(",\"state\":\"delivered\"}"); break;
			case 'F': PUTLIT(",\"state\":\"failed\"}"); break;
			case 'P': PUTLIT(",\"state\":\"pending\"}"); break;
			default: PUTLIT(",\"state\":\"unknown\"}"); break;
			}
		}
		p = nl != NULL ? nl + 1 : NULL;
	}
	PUTLIT("]}");
}

static void list_text(const struct q_index_rec *r)
{
	char age[24], size[24];
	const char *p = r->rcpts;
	size_t n;

	/* "%3s %5s %s <" */
	cli_fmt_age((long long)(cli.now - r->arrival), age, sizeof(age));
	cli_fmt_size(r->size, size, sizeof(size));
	n = strlen(age);
	cli_pad(3 - (int)n);
	cli_putn(age, n);
	cli_putc(' ');
	n = strlen(size);
	cli_pad(5 - (int)n);
	cli_putn(size, n);
	cli_putc(' ');
	cli_putn(r->id, strlen(r->id));
	PUTLIT(" <");
	cli_puts_safe(r->sender);
	if ((r->flags & Q_ENV_FROZEN) != 0)
		PUTLIT("> *** frozen ***\n");
	else
		PUTLIT(">\n");
	while (p != NULL && *p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);

		if (len >= 2) {
			switch (p[0]) {
			case 'D': PUTLIT("        D "); break;
			case 'F': PUTLIT("        F "); break;
			default: PUTLIT("          "); break;
			}
			cli_put_safe(p + 2, len - 2);
			cli_putc('\n');
		}
		p = nl != NULL ? nl + 1 : NULL;
	}
	cli_putc('\n');
}

static int list_one(const struct q_index_rec *r, void *ctx)
{
	struct list_ctx *lc = ctx;

	if (!list_match(lc, r))
		return 0;
	if (lc->count) {
		/* counted below */
	} else if (lc->ids) {
		cli_put(r->id);
		cli_putc('\n');
	} else if (lc->json) {
		if (lc->n > 0)
			cli_put(",\n");
		list_json(r);
	} else {
		list_text(r);
	}
	lc->n++;
	cli_flush_maybe();
	return 0;
}

static void compile_re(regex_t *re, const char *opt, const char *s)
{
	int rc = regcomp(re, s, REG_EXTENDED | REG_ICASE | REG_NOSUB);

	if (rc != 0) {
		char msg[256];

		regerror(rc, re, msg, sizeof(msg));
		cli_usage_error("list: option %s: bad regular expression '%s': %s",
				opt, s, msg);
	}
}

static int cmd_list(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'J' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct list_ctx lc;
	const char *err = NULL;
	int c, rc = EX_OK;

	memset(&lc, 0, sizeof(lc));
	lc.older = lc.younger = -1;
	lc.frozen = -1;
	while ((c = cli_sub_getopt(argc, argv, "f:r:o:y:zxcih", lo)) != -1) {
		switch (c) {
		case 'f':
			if (lc.has_f)
				regfree(&lc.fre);
			compile_re(&lc.fre, "-f", optarg);
			lc.has_f = true;
			break;
		case 'r':
			if (lc.has_r)
				regfree(&lc.rre);
			compile_re(&lc.rre, "-r", optarg);
			lc.has_r = true;
			break;
		case 'o': lc.older = cli_time_arg("-o", optarg); break;
		case 'y': lc.younger = cli_time_arg("-y", optarg); break;
		case 'z': lc.frozen = 1; break;
		case 'x': lc.frozen = 0; break;
		case 'c': lc.count = true; break;
		case 'i': lc.ids = true; break;
		case 'J': lc.json = true; break;
		}
	}
	if (optind < argc)
		cli_usage_error("list: unexpected argument '%s'", argv[optind]);
	if ((int)lc.count + (int)lc.ids + (int)lc.json > 1)
		cli_usage_error("list: -c, -i and --json exclude each other");

	/* Without usable hints (a full disk where Berkeley DB cannot make
	 * its regions, a damaged environment that cannot be moved aside),
	 * the queue is still listed: from its files, which are the truth */
	struct q_hints *h;
	const char *herr = NULL;
	bool scan = q_spool_hints(cli_spool(false), &h, &herr) < 0;

	if (scan)
		cli_warn("the hints cannot be opened (%s); listing from the "
			 "spool's files instead (every -H is read; no retry "
			 "times)", herr);
	if (!scan && lc.count && !lc.has_f && !lc.has_r && lc.older < 0 &&
	    lc.younger < 0 && lc.frozen < 0) {
		size_t n;

		if (q_spool_count(cli_spool(false), &n, &err) < 0)
			cli_die(EX_IOERR, "%s", err);
		cli_printf("%zu\n", n);
		return EX_OK;
	}

	if (lc.json)
		cli_put("[\n");
	if ((scan ? q_spool_list_files : q_spool_list)(cli_spool(false),
						       list_one, &lc, &err) < 0) {
		cli_warn("listing stopped: %s", err);
		rc = EX_IOERR;
	}
	if (lc.json)
		cli_put(lc.n > 0 ? "\n]\n" : "]\n");
	if (lc.count)
		cli_printf("%zu\n", lc.n);
	if (lc.has_f)
		regfree(&lc.fre);
	if (lc.has_r)
		regfree(&lc.rre);
	q_buf_free(&lc.scratch);
	return rc;
}

/* ------------------------------------------------------------------ */
/* show */

static void need_id(const char *id)
{
	if (!q_id_valid(id))
		cli_die(EX_NOINPUT, "%s: no such message (not a message id)", id);
}

/* Read a whole file into b. 0, or -1 with errno. */
static int slurp(const char *path, struct q_buf *b)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

	if (fd < 0)
		return -1;
	rc = read_all(fd, b);
	close(fd);
	return rc;
}

/* Print text line by line, escaped; CRLF and LF both end a line. */
static void put_lines(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		const char *nl = memchr(s + i, '\n', n - i);
		size_t end = nl != NULL ? (size_t)(nl - s) : n;
		size_t e = end;

		if (e > i && s[e - 1] == '\r')
			e--;
		cli_put_safe(s + i, e - i);
		cli_putc('\n');
		i = end + 1;
		cli_flush_maybe();
	}
}

static void show_data(const char *id, bool headers)
{
	struct q_buf raw = { 0 }, plain = { 0 };
	char path[4096];
	const char *sep, *p;
	size_t hlen;

	q_spool_path(cli_spool(false), id, 'D', path, sizeof(path));
	if (slurp(path, &raw) < 0) {
		if (errno == ENOENT)
			cli_die(EX_NOINPUT, "%s: no such message", id);
		cli_die(EX_IOERR, "%s: %s", path, strerror(errno));
	}
	if (q_msg_unstuff(raw.data != NULL ? raw.data : "", raw.len, &plain) < 0)
		cli_oom();
	q_buf_free(&raw);
	p = plain.data != NULL ? plain.data : "";
	/* the header ends at the first empty line */
	if (plain.len >= 2 && p[0] == '\r' && p[1] == '\n') {
		hlen = 0;
		sep = p;
	} else if ((sep = memmem(p, plain.len, "\r\n\r\n", 4)) != NULL) {
		hlen = (size_t)(sep - p) + 2;
		sep += 2;
	} else {
		hlen = plain.len;
	}
	if (headers) {
		put_lines(p, hlen);
	} else if (sep != NULL) {
		size_t off = (size_t)(sep - p) + 2;

		put_lines(p + off, plain.len - off);
	}
	q_buf_free(&plain);
}

static void show_log(const char *id)
{
	struct q_buf b = { 0 };
	char path[4096];

	q_spool_path(cli_spool(false), id, 'L', path, sizeof(path));
	if (slurp(path, &b) < 0) {
		if (errno == ENOENT) {
			struct q_env *env = NULL;

			if (q_spool_read(cli.spool, id, &env, NULL) == Q_NOTFOUND)
				cli_die(EX_NOINPUT, "%s: no such message", id);
			q_env_free(&env);
			cli_warn("%s: no message log yet", id);
			return;
		}
		cli_die(EX_IOERR, "%s: %s", path, strerror(errno));
	}
	put_lines(b.data != NULL ? b.data : "", b.len);
	q_buf_free(&b);
}

static void show_json(const struct q_env *env, const struct q_index_rec *ir)
{
	size_t i;

	cli_json_open('{');
	cli_json_kstr("id", env->id);
	cli_json_kstr("sender", env->sender != NULL ? env->sender : "");
	cli_json_kint("arrival", (long long)env->arrival);
	cli_json_kint("age", (long long)(cli.now - env->arrival));
	cli_json_kint("size", (long long)env->size);
	cli_json_kbool("frozen", (env->flags & Q_ENV_FROZEN) != 0);
	cli_json_kstr("frozen_reason", env->frozen_reason);
	cli_json_kbool("bounce", (env->flags & Q_ENV_BOUNCE) != 0);
	cli_json_kbool("8bit", (env->flags & Q_ENV_8BIT) != 0);
	cli_json_key("next_try");
	if (ir != NULL)
		cli_json_int((long long)ir->next_try);
	else
		cli_json_str(NULL);
	cli_json_key("recipients");
	cli_json_open('[');
	for (i = 0; i < env->nrcpt; i++) {
		const struct q_rcpt *r = &env->rcpt[i];

		cli_json_open('{');
		cli_json_kstr("address", r->addr);
		cli_json_kstr("state", cli_state_name(r->state));
		cli_json_kint("tries", r->tries);
		cli_json_kint("last_time", (long long)r->last_time);
		cli_json_kint("code", r->last_code);
		cli_json_kstr("host", r->host);
		cli_json_kstr("error", r->last_error);
		cli_json_close('}');
	}
	cli_json_close(']');
	cli_json_close('}');
	cli_putc('\n');
}

static void show_text(const struct q_env *env, const struct q_index_rec *ir)
{
	char t[32], a[16], s[16];
	size_t i, np = 0, nd = 0, nf = 0;

	for (i = 0; i < env->nrcpt; i++) {
		switch (env->rcpt[i].state) {
		case 'D': nd++; break;
		case 'F': nf++; break;
		default: np++; break;
		}
	}
	cli_printf("Message:     %s\n", env->id);
	cli_put("Sender:      <");
	cli_puts_safe(env->sender);
	cli_put(">\n");
	cli_printf("Arrival:     %s (%s ago)\n", q_time_stamp(env->arrival, t, sizeof(t)),
		   q_time_format((long long)(cli.now - env->arrival), a, sizeof(a)));
	cli_printf("Size:        %s (%llu bytes)\n",
		   cli_fmt_size(env->size, s, sizeof(s)),
		   (unsigned long long)env->size);
	if ((env->flags & Q_ENV_FROZEN) != 0) {
		cli_put("State:       *** frozen ***");
		if (env->frozen_reason != NULL) {
			cli_put(" (");
			cli_puts_safe(env->frozen_reason);
			cli_putc(')');
		}
		cli_putc('\n');
	} else {
		cli_put("State:       active\n");
	}
	if ((env->flags & Q_ENV_BOUNCE) != 0)
		cli_put("Bounce:      yes (a delivery status notification)\n");
	if ((env->flags & Q_ENV_8BIT) != 0)
		cli_put("Body:        8-bit (sent with BODY=8BITMIME where offered)\n");
	if (ir != NULL) {
		if (ir->next_try == 0 || ir->next_try <= cli.now)
			cli_put("Next try:    due now\n");
		else
			cli_printf("Next try:    %s (in %s)\n",
				   q_time_stamp(ir->next_try, t, sizeof(t)),
				   q_time_format((long long)(ir->next_try - cli.now),
						 a, sizeof(a)));
	}
	cli_printf("Recipients:  %zu (%zu pending, %zu delivered, %zu failed)\n",
		   env->nrcpt, np, nd, nf);
	for (i = 0; i < env->nrcpt; i++) {
		const struct q_rcpt *r = &env->rcpt[i];

		cli_put("  <");
		cli_puts_safe(r->addr);
		cli_printf(">\n    state: %s  tries: %u", cli_state_name(r->state),
			   r->tries);
		if (r->last_time != 0)
			cli_printf("  last: %s", q_time_stamp(r->last_time, t, sizeof(t)));
		if (r->last_code != 0)
			cli_printf("  code: %d", r->last_code);
		if (r->host != NULL && *r->host != '\0') {
			cli_put("  host: ");
			cli_puts_safe(r->host);
		}
		cli_putc('\n');
		if (r->last_error != NULL && *r->last_error != '\0') {
			cli_put("    error: ");
			cli_puts_safe(r->last_error);
			cli_putc('\n');
		}
	}
}

static int cmd_show(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "headers", no_argument, NULL, 'H' },
		{ "body", no_argument, NULL, 'B' },
		{ "log", no_argument, NULL, 'L' },
		{ "json", no_argument, NULL, 'J' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct q_index_rec ir;
	struct q_hints *h = NULL;
	struct q_env *env = NULL;
	const char *id, *err = NULL;
	int c, what = 0, rc;
	bool have_ir = false;

	while ((c = cli_sub_getopt(argc, argv, "h", lo)) != -1) {
		if (what != 0 && what != c)
			cli_usage_error("show: --headers, --body, --log and --json "
					"exclude each other");
		what = c;
	}
	if (optind + 1 != argc)
		cli_usage_error("show: give exactly one message id");
	id = argv[optind];
	need_id(id);
	cli_spool(false);

	if (what == 'H' || what == 'B') {
		show_data(id, what == 'H');
		return EX_OK;
	}
	if (what == 'L') {
		show_log(id);
		return EX_OK;
	}
	rc = q_spool_read(cli.spool, id, &env, &err);
	if (rc == Q_NOTFOUND)
		cli_die(EX_NOINPUT, "%s: no such message", id);
	if (rc < 0)
		cli_die(EX_DATAERR, "%s: %s", id, err);
	memset(&ir, 0, sizeof(ir));
	if (q_spool_hints(cli.spool, &h, NULL) == 0 &&
	    q_index_get(h, id, &ir, NULL) == 0)
		have_ir = true;
	if (what == 'J')
		show_json(env, have_ir ? &ir : NULL);
	else
		show_text(env, have_ir ? &ir : NULL);
	q_index_rec_clear(&ir);
	q_env_free(&env);
	return EX_OK;
}

/* ------------------------------------------------------------------ */
/* freeze, thaw, rm */

enum msg_op { OP_FREEZE, OP_THAW, OP_RM };

static int cmd_msgop(int argc, char **argv, enum msg_op op)
{
	static const struct option lo[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct passwd *pw = getpwuid(getuid());
	const char *user = pw != NULL ? pw->pw_name : "unknown";
	size_t busy = 0, missing = 0, failed = 0;
	char reason[128];
	bool logging;
	int c, i;

	while ((c = cli_sub_getopt(argc, argv, "h", lo)) != -1)
		;
	if (optind == argc)
		cli_usage_error("%s: give one or more message ids", argv[0]);
	cli_spool(false);
	logging = q_log_open(q_spool_dir(cli.spool), false, NULL) == 0;
	snprintf(reason, sizeof(reason), "by %s with qctl", user);

	for (i = optind; i < argc; i++) {
		const char *id = argv[i], *err = NULL;
		struct q_msg *m = NULL;
		struct q_env *env;
		int rc;

		if (!q_id_valid(id)) {
			cli_warn("%s: no such message (not a message id)", id);
			missing++;
			continue;
		}
		rc = q_msg_lock(cli.spool, id, &m, &err);
		if (rc == Q_NOTFOUND) {
			cli_warn("%s: no such message", id);
			missing++;
			continue;
		}
		if (rc == Q_BUSY) {
			cli_warn("%s: busy (being delivered); not changed", id);
			busy++;
			continue;
		}
		if (rc < 0) {
			cli_warn("%s: %s", id, err);
			failed++;
			continue;
		}
		env = q_msg_env(m);
		switch (op) {
		case OP_FREEZE:
			if ((env->flags & Q_ENV_FROZEN) != 0) {
				cli_printf("%s: already frozen\n", id);
				break;
			}
			if (q_msg_set_frozen(m, true, reason, &err) < 0) {
				cli_warn("%s: %s", id, err);
				failed++;
				break;
			}
			q_msglog(cli.spool, id, "frozen by qctl", NULL);
			if (logging)
				q_log("%s frozen by %s (qctl)", id, user);
			cli_printf("%s: frozen\n", id);
			break;
		case OP_THAW:
			if ((env->flags & Q_ENV_FROZEN) == 0) {
				cli_printf("%s: not frozen\n", id);
				break;
			}
			if (q_msg_set_frozen(m, false, NULL, &err) < 0) {
				cli_warn("%s: %s", id, err);
				failed++;
				break;
			}
			q_msglog(cli.spool, id, "thawed by qctl", NULL);
			if (logging)
				q_log("%s thawed by %s (qctl)", id, user);
			cli_printf("%s: thawed\n", id);
			break;
		case OP_RM:
			if (q_msg_remove(&m, &err) < 0) {
				cli_warn("%s: %s", id, err);
				failed++;
				break;
			}
			if (logging)
				q_log("%s removed by %s (qctl)", id, user);
			cli_printf("%s: removed\n", id);
			break;
		}
		if (m != NULL)
			q_msg_unlock(&m);
		cli_flush_maybe();
	}
	if (logging)
		q_log_close();
	if (busy > 0)
		return EX_TEMPFAIL;
	if (failed > 0)
		return EX_IOERR;
	if (missing > 0)
		return EX_NOINPUT;
	return EX_OK;
}

static int cmd_freeze(int argc, char **argv) { return cmd_msgop(argc, argv, OP_FREEZE); }
static int cmd_thaw(int argc, char **argv) { return cmd_msgop(argc, argv, OP_THAW); }
static int cmd_rm(int argc, char **argv) { return cmd_msgop(argc, argv, OP_RM); }

/* ------------------------------------------------------------------ */
/* retry */

struct retry_ctx {
	const char *pattern;
	bool glob, json;
	size_t n, skipped;
	struct q_buf key;
};

static bool key_matches(struct retry_ctx *rc, const char *key)
{
	if (rc->pattern == NULL)
		return true;
	if (rc->glob)
		return fnmatch(rc->pattern, key, FNM_CASEFOLD) == 0;
	return strcasestr(key, rc->pattern) != NULL;
}

static int retry_one(const void *k, size_t klen, const void *v, size_t vlen,
		     void *ctx)
{
	struct retry_ctx *rc = ctx;
	struct q_retry_rec rec;
	const char *err = NULL;
	char t1[32], t2[32], t3[32], d[16];

	q_buf_reset(&rc->key);
	if (q_buf_add(&rc->key, k, klen) < 0)
		cli_oom();
	if (!key_matches(rc, rc->key.data))
		return 0;
	memset(&rec, 0, sizeof(rec));
	if (q_retry_rec_decode(v, vlen, &rec, &err) < 0) {
		cli_flush();
		fprintf(stderr, "%s: retry record '", cli.prog);
		q_fputs_safe(rc->key.data, stderr);
		fprintf(stderr, "': %s (skipped)\n", err);
		rc->skipped++;
		return 0;
	}
	if (rc->json) {
		if (rc->n > 0)
			cli_put(",\n");
		cli_json_open('{');
		cli_json_key("key");
		cli_json_strn(k, klen);
		cli_json_kint("first_failed", (long long)rec.first_failed);
		cli_json_kint("last_try", (long long)rec.last_try);
		cli_json_kint("next_try", (long long)rec.next_try);
		cli_json_kbool("expired", rec.expired);
		cli_json_kstr("kind", rec.kind);
		cli_json_kint("code", rec.code);
		cli_json_kint("errno", rec.err);
		cli_json_kstr("text", rec.text);
		cli_json_close('}');
	} else {
		cli_put_safe(k, klen);
		cli_putc(' ');
		cli_puts_safe(rec.kind[0] != '\0' ? rec.kind : "error");
		if (rec.code != 0)
			cli_printf(" %d", rec.code);
		if (rec.err != 0)
			cli_printf(" (errno %d)", rec.err);
		if (rec.text != NULL && *rec.text != '\0') {
			cli_put(": ");
			cli_puts_safe(rec.text);
		}
		cli_printf("\n  first failed: %s\n  last tried:   %s\n  next try at:  %s",
			   q_time_stamp(rec.first_failed, t1, sizeof(t1)),
			   q_time_stamp(rec.last_try, t2, sizeof(t2)),
			   q_time_stamp(rec.next_try, t3, sizeof(t3)));
		if (rec.expired)
			cli_put(" *");
		else if (rec.next_try > cli.now)
			cli_printf(" (in %s)", q_time_format((long long)(rec.next_try -
								 cli.now), d, sizeof(d)));
		else
			cli_put(" (due)");
		cli_put("\n\n");
	}
	rc->n++;
	q_retry_rec_clear(&rec);
	cli_flush_maybe();
	return 0;
}

static int cmd_retry_clear(int argc, char **argv)
{
	struct q_hints *h;
	size_t missing = 0, failed = 0;
	int i;

	if (argc < 2)
		cli_usage_error("retry clear: give one or more retry keys");
	h = cli_hints();
	for (i = 1; i < argc; i++) {
		const char *err = NULL;
		int rc = q_retry_clear(h, argv[i], &err);

		if (rc == Q_NOTFOUND) {
			cli_warn("%s: no such retry record", argv[i]);
			missing++;
		} else if (rc < 0) {
			cli_warn("%s: %s", argv[i], err);
			failed++;
		} else {
			cli_put_safe(argv[i], strlen(argv[i]));
			cli_put(": cleared\n");
		}
	}
	return failed > 0 ? EX_IOERR : missing > 0 ? EX_NOINPUT : EX_OK;
}

static int cmd_retry(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'J' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct retry_ctx rc;
	const char *err = NULL;
	int c, ret = EX_OK;

	if (argc >= 2 && strcmp(argv[1], "clear") == 0)
		return cmd_retry_clear(argc - 1, argv + 1);
	memset(&rc, 0, sizeof(rc));
	while ((c = cli_sub_getopt(argc, argv, "h", lo)) != -1)
		if (c == 'J')
			rc.json = true;
	if (optind < argc) {
		rc.pattern = argv[optind++];
		rc.glob = strpbrk(rc.pattern, "*?[") != NULL;
	}
	if (optind < argc)
		cli_usage_error("retry: one pattern at most (or: retry clear KEY...)");
	if (rc.json)
		cli_put("[\n");
	if (q_hints_iter(cli_hints(), Q_DB_RETRY, NULL, 0, retry_one, &rc, &err) < 0) {
		cli_warn("retry: %s", err);
		ret = EX_IOERR;
	}
	if (rc.json)
		cli_put(rc.n > 0 ? "\n]\n" : "]\n");
	else if (rc.n == 0)
		cli_put(rc.pattern != NULL ? "no retry records match\n"
			: "no retry records\n");
	q_buf_free(&rc.key);
	return ret;
}

/* ------------------------------------------------------------------ */
/* stats (qshape) */

#define NBUCKET 10
static const int bucket_min[NBUCKET] = { 5, 10, 20, 40, 80, 160, 320, 640, 1280, -1 };

struct dom {
	char *name;
	unsigned long long msgs[NBUCKET + 1];   /* [0] = total */
	unsigned long long bytes[NBUCKET + 1];
};

struct stats_ctx {
	struct dom *tab;          /* open addressing, cap a power of 2 */
	size_t cap, n;
	struct dom total;
};

static size_t hash_dom(const char *s, size_t n)
{
	size_t h = 5381, i;

	for (i = 0; i < n; i++)
		h = h * 33 + (unsigned char)(s[i] | 0x20);
	return h;
}

static struct dom *dom_get(struct stats_ctx *sc, const char *s, size_t n)
{
	size_t i;

	if ((sc->n + 1) * 2 > sc->cap) {
		size_t ncap = sc->cap != 0 ? sc->cap * 2 : 64, j;
		struct dom *nt = calloc(ncap, sizeof(*nt));

		if (nt == NULL)
			cli_oom();
		for (j = 0; j < sc->cap; j++) {
			struct dom *d = &sc->tab[j];

			if (d->name == NULL)
				continue;
			i = hash_dom(d->name, strlen(d->name)) & (ncap - 1);
			while (nt[i].name != NULL)
				i = (i + 1) & (ncap - 1);
			nt[i] = *d;
		}
		free(sc->tab);
		sc->tab = nt;
		sc->cap = ncap;
	}
	i = hash_dom(s, n) & (sc->cap - 1);
	while (sc->tab[i].name != NULL) {
		if (strncasecmp(sc->tab[i].name, s, n) == 0 &&
		    sc->tab[i].name[n] == '\0')
			return &sc->tab[i];
		i = (i + 1) & (sc->cap - 1);
	}
	sc->tab[i].name = strndup(s, n);
	if (sc->tab[i].name == NULL)
		cli_oom();
	for (size_t k = 0; k < n; k++)
		if (sc->tab[i].name[k] >= 'A' && sc->tab[i].name[k] <= 'Z')
			sc->tab[i].name[k] += 'a' - 'A';
	sc->n++;
	return &sc->tab[i];
}

static int bucket_of(long long age)
{
	long long m = age > 0 ? age / 60 : 0;
	int b;

	for (b = 0; b < NBUCKET - 1; b++)
		if (m < bucket_min[b])
			return b + 1;
	return NBUCKET;
}

static void dom_add(struct dom *d, int b, uint64_t size)
{
	d->msgs[0]++;
	d->msgs[b]++;
	d->bytes[0] += size;
	d->bytes[b] += size;
}

static int stats_one(const struct q_index_rec *r, void *ctx)
{
	struct stats_ctx *sc = ctx;
	int b = bucket_of((long long)(cli.now - r->arrival));
	const char *p = r->domains;

	if (r->npending == 0)
		return 0;
	dom_add(&sc->total, b, r->size);
	while (p != NULL && *p != '\0') {
		const char *comma = strchr(p, ',');
		size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);

		if (len > 0)
			dom_add(dom_get(sc, p, len), b, r->size);
		p = comma != NULL ? comma + 1 : NULL;
	}
	return 0;
}

static int dom_cmp(const void *a, const void *b)
{
	const struct dom *x = *(const struct dom *const *)a;
	const struct dom *y = *(const struct dom *const *)b;

	if (x->msgs[0] != y->msgs[0])
		return x->msgs[0] > y->msgs[0] ? -1 : 1;
	if (x->bytes[0] != y->bytes[0])
		return x->bytes[0] > y->bytes[0] ? -1 : 1;
	return strcmp(x->name, y->name);
}

static void stats_row(const char *name, int w, const unsigned long long *v,
		      bool bytes)
{
	int i, pad = w - (int)strlen(name);

	while (pad-- > 0)
		cli_putc(' ');
	cli_puts_safe(name);
	for (i = 0; i <= NBUCKET; i++) {
		char s[16];

		if (bytes)
			cli_printf(" %6s", cli_fmt_size(v[i], s, sizeof(s)));
		else
			cli_printf(" %6llu", v[i]);
	}
	cli_putc('\n');
}

static void stats_table(struct stats_ctx *sc, struct dom **sorted, int w,
			bool bytes)
{
	int i;

	cli_printf("%*s", w, bytes ? "bytes" : "messages");
	cli_printf(" %6s", "T");
	for (i = 0; i < NBUCKET - 1; i++)
		cli_printf(" %6d", bucket_min[i]);
	cli_printf(" %6s\n", "1280+");
	stats_row("TOTAL", w, bytes ? sc->total.bytes : sc->total.msgs, bytes);
	for (size_t k = 0; k < sc->n; k++)
		stats_row(sorted[k]->name, w, bytes ? sorted[k]->bytes : sorted[k]->msgs,
			  bytes);
}

static void stats_json_dom(const char *key, const char *name, const struct dom *d)
{
	int i;

	cli_json_open('{');
	if (name != NULL)
		cli_json_kstr(key, name);
	cli_json_key("messages");
	cli_json_open('[');
	for (i = 0; i <= NBUCKET; i++)
		cli_json_int((long long)d->msgs[i]);
	cli_json_close(']');
	cli_json_key("bytes");
	cli_json_open('[');
	for (i = 0; i <= NBUCKET; i++)
		cli_json_int((long long)d->bytes[i]);
	cli_json_close(']');
	cli_json_close('}');
}

static int cmd_stats(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'J' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct stats_ctx sc;
	struct dom **sorted;
	const char *err = NULL;
	bool json = false;
	int c, w = 20, rc = EX_OK;
	size_t i, k;

	while ((c = cli_sub_getopt(argc, argv, "h", lo)) != -1)
		if (c == 'J')
			json = true;
	if (optind < argc)
		cli_usage_error("stats: unexpected argument '%s'", argv[optind]);
	memset(&sc, 0, sizeof(sc));
	if (q_spool_list(cli_spool(false), stats_one, &sc, &err) < 0) {
		cli_warn("stats: %s", err);
		rc = EX_IOERR;
	}
	sorted = calloc(sc.n + 1, sizeof(*sorted));
	if (sorted == NULL)
		cli_oom();
	for (i = 0, k = 0; i < sc.cap; i++)
		if (sc.tab[i].name != NULL)
			sorted[k++] = &sc.tab[i];
	qsort(sorted, sc.n, sizeof(*sorted), dom_cmp);
	for (i = 0; i < sc.n; i++) {
		int l = (int)strlen(sorted[i]->name);

		if (l > w)
			w = l > 60 ? 60 : l;
	}
	if (json) {
		cli_json_open('{');
		cli_json_key("buckets");
		cli_json_open('[');
		for (i = 0; i < NBUCKET; i++) {
			if (bucket_min[i] < 0)
				cli_json_str("1280+");
			else
				cli_json_int(bucket_min[i]);
		}
		cli_json_close(']');
		cli_json_key("total");
		stats_json_dom("domain", NULL, &sc.total);
		cli_json_key("domains");
		cli_json_open('[');
		for (i = 0; i < sc.n; i++) {
			if (i > 0)
				cli_put(",\n");
			stats_json_dom("domain", sorted[i]->name, sorted[i]);
		}
		cli_json_close(']');
		cli_json_close('}');
		cli_putc('\n');
	} else {
		stats_table(&sc, sorted, w, false);
		cli_putc('\n');
		stats_table(&sc, sorted, w, true);
	}
	for (i = 0; i < sc.cap; i++)
		free(sc.tab[i].name);
	free(sc.tab);
	free(sorted);
	return rc;
}

/* ------------------------------------------------------------------ */
/* sessions */

struct sess_ctx {
	bool json;
	size_t n;
};

static int sess_one(const struct q_session_rec *s, void *ctx)
{
	struct sess_ctx *sc = ctx;
	long long el = (long long)(cli.now - s->started);
	bool v6 = s->ip != NULL && strchr(s->ip, ':') != NULL;
	char e[16], b[16];

	if (sc->json) {
		if (sc->n > 0)
			cli_put(",\n");
		cli_json_open('{');
		cli_json_kint("pid", s->pid);
		cli_json_kint("worker", s->worker);
		cli_json_kstr("host", s->host);
		cli_json_kstr("ip", s->ip);
		cli_json_kint("port", s->port);
		cli_json_kstr("tls", s->tls);
		cli_json_kstr("state", s->state);
		cli_json_kstr("msg", s->msgid);
		cli_json_kint("msgs", s->msgs);
		cli_json_kint("bytes", (long long)s->bytes);
		cli_json_kint("started", (long long)s->started);
		cli_json_kint("changed", (long long)s->changed);
		cli_json_kint("elapsed", el);
		cli_json_close('}');
	} else {
		struct q_buf f = { 0 };

		cli_printf("%-7ld %2u ", s->pid, (unsigned)s->worker);
		cli_buf_safe(&f, s->host != NULL ? s->host : "-",
			     strlen(s->host != NULL ? s->host : "-"));
		cli_printf("%-24s ", f.data);
		q_buf_reset(&f);
		if (v6)
			q_buf_addc(&f, '[');
		cli_buf_safe(&f, s->ip != NULL ? s->ip : "-",
			     strlen(s->ip != NULL ? s->ip : "-"));
		if (q_buf_printf(&f, "%s:%u", v6 ? "]" : "", (unsigned)s->port) < 0)
			cli_oom();
		cli_printf("%-21s ", f.data);
		q_buf_reset(&f);
		cli_buf_safe(&f, s->tls != NULL ? s->tls : "-",
			     strlen(s->tls != NULL ? s->tls : "-"));
		cli_printf("%-12s ", f.data);
		q_buf_reset(&f);
		cli_buf_safe(&f, s->state != NULL ? s->state : "-",
			     strlen(s->state != NULL ? s->state : "-"));
		cli_printf("%-8s %-16s %5u %6s %s\n", f.data,
			   s->msgid != NULL && q_id_valid(s->msgid) ? s->msgid : "-",
			   (unsigned)s->msgs, cli_fmt_size(s->bytes, b, sizeof(b)),
			   q_time_format(el, e, sizeof(e)));
		q_buf_free(&f);
	}
	sc->n++;
	return 0;
}

static int cmd_sessions(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'J' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct sess_ctx sc = { 0 };
	const char *err = NULL;
	int c, rc = EX_OK;

	while ((c = cli_sub_getopt(argc, argv, "h", lo)) != -1)
		if (c == 'J')
			sc.json = true;
	if (optind < argc)
		cli_usage_error("sessions: unexpected argument '%s'", argv[optind]);
	if (sc.json)
		cli_put("[\n");
	else
		cli_printf("%-7s %2s %-24s %-21s %-12s %-8s %-16s %5s %6s %s\n",
			   "PID", "W", "HOST", "IP:PORT", "TLS", "STATE", "MSG",
			   "MSGS", "BYTES", "ELAPSED");
	if (q_session_list(cli_hints(), sess_one, &sc, &err) < 0) {
		cli_warn("sessions: %s", err);
		rc = EX_IOERR;
	}
	if (sc.json)
		cli_put(sc.n > 0 ? "\n]\n" : "]\n");
	else if (sc.n == 0)
		cli_put("no live sessions\n");
	return rc;
}

/* ------------------------------------------------------------------ */
/* flush: the runner's own code (q_run), forced */

static int cmd_flush(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'J' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct q_run_opts o;
	struct q_run_stats st;
	bool json = false, verbose = false;
	const char *err = NULL;
	int c;

	memset(&o, 0, sizeof(o));
	while ((c = cli_sub_getopt(argc, argv, "hvR:P:", lo)) != -1) {
		switch (c) {
		case 'J': json = true; break;
		case 'v': verbose = true; break;
		case 'R': o.domain = optarg; break;
		case 'P': {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (*end != '\0' || n < 1 || n > 256)
				cli_usage_error("flush: -P needs a number from 1 to 256");
			o.parallel = (unsigned)n;
			break;
		}
		}
	}
	if (optind < argc && o.domain != NULL)
		cli_usage_error("flush: give message ids or -R DOMAIN, not both");
	for (int i = optind; i < argc; i++)
		if (!q_id_valid(argv[i]))
			cli_usage_error("flush: '%s' is not a message id", argv[i]);
	o.ids = (const char *const *)&argv[optind];
	o.nids = (size_t)(argc - optind);
	o.no_run_lock = o.nids > 0;
	o.force = true;
	o.verbose = verbose ? stdout : NULL;
	cli_conf();
	cli_spool(true);
	if (q_log_open(q_spool_dir(cli.spool), false, &err) < 0)
		cli_warn("main log: %s", err);
	cli_flush();
	int ret = q_run(cli.spool, cli.conf, &o, &st, &err);
	if (ret == Q_BUSY) {
		cli_warn("flush: %u queue runs already in progress (queue_run_max); "
			 "not starting another", cli.conf->queue_run_max);
		return EX_TEMPFAIL;
	}
	if (ret < 0) {
		cli_warn("flush: %s", err);
		return EX_TEMPFAIL;
	}
	if (json) {
		cli_json_open('{');
		cli_json_kint("messages", (long long)st.messages);
		cli_json_kint("completed", (long long)st.completed);
		cli_json_kint("delivered", (long long)st.delivered);
		cli_json_kint("deferred", (long long)st.deferred);
		cli_json_kint("failed", (long long)st.failed);
		cli_json_kint("bounces", (long long)st.bounces);
		cli_json_kint("connections", (long long)st.connections);
		cli_json_kint("busy", (long long)st.skipped_busy);
		cli_json_close('}');
		cli_putc('\n');
	} else {
		cli_printf("flush: %zu messages (%zu completed): %zu delivered, %zu deferred, "
			   "%zu failed; %zu busy\n", st.messages, st.completed,
			   st.delivered, st.deferred, st.failed, st.skipped_busy);
	}
	if (o.nids > 0 && st.messages + st.skipped_busy < o.nids)
		cli_warn("flush: %zu of the %zu messages named were not due or not on the "
			 "queue", o.nids - st.messages - st.skipped_busy, o.nids);
	return st.skipped_busy > 0 ? EX_TEMPFAIL : EX_OK;
}

/* ------------------------------------------------------------------ */
/* config */

static int cmd_config(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct q_conf *conf;
	int c;

	while ((c = cli_sub_getopt(argc, argv, "h", lo)) != -1)
		;
	if (optind < argc)
		cli_usage_error("config: unexpected argument '%s'", argv[optind]);
	conf = cli_conf();
	cli_flush();
	q_conf_print(conf, stdout);     /* says which file it came from */
	return EX_OK;
}

/* ------------------------------------------------------------------ */

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{ "submit", cmd_submit },
	{ "list", cmd_list },
	{ "show", cmd_show },
	{ "freeze", cmd_freeze },
	{ "thaw", cmd_thaw },
	{ "rm", cmd_rm },
	{ "retry", cmd_retry },
	{ "stats", cmd_stats },
	{ "sessions", cmd_sessions },
	{ "flush", cmd_flush },
	{ "config", cmd_config },
};

int main(int argc, char **argv)
{
	int i = cli_start("qctl", argc, argv, usage);
	size_t k;

	if (i >= argc) {
		usage(stderr);
		return cli_end(EX_USAGE);
	}
	for (k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
		if (strcmp(argv[i], commands[k].name) == 0) {
			optind = 1;
			return cli_end(commands[k].fn(argc - i, argv + i));
		}
	}
	cli_usage_error("unknown command '%s'", argv[i]);
}
