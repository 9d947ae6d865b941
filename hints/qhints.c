/*
 * hints/qhints.c - maintenance of the hints databases under <spool>/db.
 *
 *   qhints [-C FILE] dump DB [--json]
 *   qhints [-C FILE] tidy [-t AGE]
 *   qhints [-C FILE] delete DB KEY...
 *   qhints [-C FILE] rebuild
 *   qhints [-C FILE] reboot
 *
 * Owns nothing: every record is read and written through libq (q/hints.h,
 * the codecs of each record type). The spool files are the truth; this
 * tool only removes or recreates hints, never a message.
 *
 * Invariants: tidy and delete never remove a record while walking its
 * database (keys are collected first, then deleted one transaction
 * each), so a concurrent runner is never blocked for the length of a
 * walk. A record of an unknown version is reported on stderr and
 * skipped, never guessed at.
 *
 * Weak spots, honestly: tidy checks each wait entry and address key with
 * one stat() of the message's -H file (O(records)); rebuild routes every
 * pending domain once (cached per run), which for `mx` routes means one
 * DNS lookup per distinct domain.
 */
#include "config.h"
#include "bin/cli.h"
#include "q/addr.h"
#include "q/conf.h"
#include "q/hints.h"
#include "q/retry.h"
#include "q/route.h"
#include "q/spool.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fputs(
"usage: qhints [-C FILE] COMMAND [ARGS]\n"
"Inspect and maintain the qkit hints databases (SPOOL/db).\n"
"\n"
"Options before the command:\n"
"  -C FILE         configuration file (else $QKIT_CONFIG, else " SYSCONFDIR "/qkit.conf)\n"
"  --help          this text\n"
"  --version       print the version\n"
"\n"
"Commands:\n"
"  dump DB [--json]\n"
"                  print every record of a database, decoded; DB is one of\n"
"                  index, retry, wait, serialize, sessions (or wait-smtp, ...)\n"
"  tidy [-t AGE]   remove retry records not tried for AGE (default 30d), and\n"
"                  wait entries, address retry keys and index entries of\n"
"                  messages no longer on the spool; stale serialization slots\n"
"  delete DB KEY...\n"
"                  delete records (for wait: every id waiting for the host)\n"
"  rebuild         recreate the queue index and the wait lists from the spool\n"
"  reboot          remove serialization slots and session records from before\n"
"                  the current boot (for an @reboot crontab line)\n"
"\n"
"Exit status: 0 ok, 64 usage, 66 no such record, 74 I/O error,\n"
"78 configuration error.\n", f);
}


static void no_more_args(int argc, char **argv)
{
	if (optind < argc)
		cli_usage_error("%s: unexpected argument '%s'", argv[0], argv[optind]);
}

static enum q_db db_arg(const char *name)
{
	struct q_hints *h = cli_hints();
	const char *err = NULL;
	enum q_db db;

	if (q_hints_db_lookup(h, name, &db, &err) < 0)
		cli_usage_error("unknown database '%s' (index, retry, wait, serialize, "
				"sessions): %s", name, err != NULL ? err : "");
	return db;
}

/* A key printed as text: escaped, never raw. */
static void put_key(const void *k, size_t klen)
{
	cli_put_safe(k, klen);
}

static void warn_key(const char *dbname, const void *k, size_t klen,
		     const char *what)
{
	struct q_buf b = { 0 };

	/* not cli_flush(): dump_one takes back what it wrote for this record */
	q_escape_term(&b, k, klen, false);
	fflush(stdout);
	fprintf(stderr, "%s: %s: record '%s': %s (skipped)\n", cli.prog, dbname,
		b.data != NULL ? b.data : "", what);
	q_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* dump */

struct dump_ctx {
	enum q_db db;
	const char *dbname;
	bool json;
	size_t n, skipped;
};

static void put_time_field(const char *name, time_t t)
{
	char s[32];

	cli_printf(" %s=%s", name, t != 0 ? q_time_stamp(t, s, sizeof(s)) : "-");
}

static void put_str_field(const char *name, const char *v)
{
	cli_printf(" %s=", name);
	if (v == NULL || *v == '\0') {
		cli_putc('-');
		return;
	}
	cli_putc('"');
	cli_puts_safe(v);
	cli_putc('"');
}

static int dump_index(struct dump_ctx *dc, const void *k, size_t klen,
		      const void *v, size_t vlen)
{
	struct q_index_rec r;
	const char *err = NULL;

	memset(&r, 0, sizeof(r));
	if (q_index_rec_decode(v, vlen, &r, &err) < 0) {
		warn_key(dc->dbname, k, klen, err);
		dc->skipped++;
		return -1;
	}
	if (dc->json) {
		cli_json_kint("arrival", (long long)r.arrival);
		cli_json_kint("size", (long long)r.size);
		cli_json_kint("nrcpt", r.nrcpt);
		cli_json_kint("npending", r.npending);
		cli_json_kbool("frozen", (r.flags & Q_ENV_FROZEN) != 0);
		cli_json_kint("flags", r.flags);
		cli_json_kint("next_try", (long long)r.next_try);
		cli_json_kstr("sender", r.sender);
		cli_json_kstr("domains", r.domains);
		cli_json_key("recipients");
		cli_json_open('[');
		for (const char *p = r.rcpts; p != NULL && *p != '\0';) {
			const char *nl = strchr(p, '\n');
			size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);

			if (len >= 2) {
				cli_json_open('{');
				cli_json_key("address");
				cli_json_strn(p + 2, len - 2);
				cli_json_kstr("state", cli_state_name(p[0]));
				cli_json_close('}');
			}
			p = nl != NULL ? nl + 1 : NULL;
		}
		cli_json_close(']');
	} else {
		put_time_field("arrival", r.arrival);
		cli_printf(" size=%llu rcpts=%u pending=%u%s",
			   (unsigned long long)r.size, r.nrcpt, r.npending,
			   (r.flags & Q_ENV_FROZEN) != 0 ? " frozen" : "");
		put_time_field("next_try", r.next_try);
		cli_put(" sender=<");
		cli_puts_safe(r.sender);
		cli_putc('>');
		put_str_field("domains", r.domains);
	}
	q_index_rec_clear(&r);
	return 0;
}

static int dump_retry(struct dump_ctx *dc, const void *k, size_t klen,
		      const void *v, size_t vlen)
{
	struct q_retry_rec r;
	const char *err = NULL;

	memset(&r, 0, sizeof(r));
	if (q_retry_rec_decode(v, vlen, &r, &err) < 0) {
		warn_key(dc->dbname, k, klen, err);
		dc->skipped++;
		return -1;
	}
	if (dc->json) {
		cli_json_kint("first_failed", (long long)r.first_failed);
		cli_json_kint("last_try", (long long)r.last_try);
		cli_json_kint("next_try", (long long)r.next_try);
		cli_json_kbool("expired", r.expired);
		cli_json_kstr("kind", r.kind);
		cli_json_kint("code", r.code);
		cli_json_kint("errno", r.err);
		cli_json_kstr("text", r.text);
	} else {
		put_time_field("first_failed", r.first_failed);
		put_time_field("last_try", r.last_try);
		put_time_field("next_try", r.next_try);
		cli_printf("%s", r.expired ? " expired" : "");
		put_str_field("kind", r.kind);
		cli_printf(" code=%d errno=%d", r.code, r.err);
		put_str_field("text", r.text);
	}
	q_retry_rec_clear(&r);
	return 0;
}

static int dump_wait(struct dump_ctx *dc, const void *k, size_t klen,
		     const void *v, size_t vlen)
{
	(void)k;
	(void)klen;
	if (dc->json) {
		cli_json_key("id");
		cli_json_strn(v, vlen);
	} else {
		cli_put(" id=");
		cli_put_safe(v, vlen);
	}
	return 0;
}

static int dump_serialize(struct dump_ctx *dc, const void *k, size_t klen,
			  const void *v, size_t vlen)
{
	struct q_slot s;
	const char *err = NULL;

	memset(&s, 0, sizeof(s));
	if (q_slot_decode(v, vlen, &s, &err) < 0) {
		warn_key(dc->dbname, k, klen, err);
		dc->skipped++;
		return -1;
	}
	if (dc->json) {
		cli_json_kint("slot", s.slot);
		cli_json_kint("pid", s.pid);
		cli_json_kint("taken", (long long)s.taken);
		cli_json_kstr("boot_id", s.boot_id);
		cli_json_kbool("pid_alive", q_pid_alive(s.pid));
	} else {
		cli_printf(" slot=%u pid=%ld%s", (unsigned)s.slot, s.pid,
			   q_pid_alive(s.pid) ? "" : "(dead)");
		put_time_field("taken", s.taken);
		put_str_field("boot_id", s.boot_id);
	}
	return 0;
}

static int dump_session(struct dump_ctx *dc, const void *k, size_t klen,
			const void *v, size_t vlen)
{
	struct q_session_rec s;
	const char *err = NULL;

	memset(&s, 0, sizeof(s));
	if (q_session_decode(v, vlen, &s, &err) < 0) {
		warn_key(dc->dbname, k, klen, err);
		dc->skipped++;
		return -1;
	}
	if (dc->json) {
		cli_json_kint("pid", s.pid);
		cli_json_kint("worker", s.worker);
		cli_json_kstr("boot_id", s.boot_id);
		cli_json_kstr("host", s.host);
		cli_json_kstr("ip", s.ip);
		cli_json_kint("port", s.port);
		cli_json_kstr("tls", s.tls);
		cli_json_kstr("state", s.state);
		cli_json_kstr("msg", s.msgid);
		cli_json_kint("msgs", s.msgs);
		cli_json_kint("bytes", (long long)s.bytes);
		cli_json_kint("started", (long long)s.started);
		cli_json_kint("changed", (long long)s.changed);
	} else {
		cli_printf(" pid=%ld worker=%u", s.pid, (unsigned)s.worker);
		put_str_field("host", s.host);
		put_str_field("ip", s.ip);
		cli_printf(" port=%u", (unsigned)s.port);
		put_str_field("tls", s.tls);
		put_str_field("state", s.state);
		put_str_field("msg", s.msgid);
		cli_printf(" msgs=%u bytes=%llu", (unsigned)s.msgs,
			   (unsigned long long)s.bytes);
		put_time_field("started", s.started);
		put_time_field("changed", s.changed);
		put_str_field("boot_id", s.boot_id);
	}
	q_session_rec_clear(&s);
	return 0;
}

static int dump_one(const void *k, size_t klen, const void *v, size_t vlen,
		    void *ctx)
{
	struct dump_ctx *dc = ctx;
	size_t mark = cli.out.len;
	int rc = 0;

	/* each record: start, then fields; on a decode error what was
	 * written for it is taken back (the buffer is not flushed in
	 * between) */
	if (dc->json) {
		if (dc->n > 0)
			cli_put(",\n");
		cli_json_open('{');
		cli_json_key("key");
		cli_json_strn(k, klen);
	} else {
		put_key(k, klen);
		cli_putc(':');
	}
	switch (dc->db) {
	case Q_DB_INDEX: rc = dump_index(dc, k, klen, v, vlen); break;
	case Q_DB_RETRY: rc = dump_retry(dc, k, klen, v, vlen); break;
	case Q_DB_WAIT: rc = dump_wait(dc, k, klen, v, vlen); break;
	case Q_DB_SERIALIZE: rc = dump_serialize(dc, k, klen, v, vlen); break;
	case Q_DB_SESSIONS: rc = dump_session(dc, k, klen, v, vlen); break;
	default: rc = -1; break;
	}
	if (rc < 0) {
		cli.out.len = mark;
		if (cli.out.data != NULL)
			cli.out.data[mark] = '\0';
		return 0;
	}
	if (dc->json)
		cli_json_close('}');
	else
		cli_putc('\n');
	dc->n++;
	cli_flush_maybe();
	return 0;
}

static int cmd_dump(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'J' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct dump_ctx dc;
	const char *err = NULL;
	int c, rc = EX_OK;

	memset(&dc, 0, sizeof(dc));
	while ((c = cli_sub_getopt(argc, argv, "h", lo)) != -1)
		if (c == 'J')
			dc.json = true;
	if (optind + 1 != argc)
		cli_usage_error("dump: give one database name (index, retry, wait, "
				"serialize, sessions)");
	dc.db = db_arg(argv[optind]);
	dc.dbname = q_hints_db_name(cli.hints, dc.db);
	if (dc.json)
		cli_put("[\n");
	if (q_hints_iter(cli.hints, dc.db, NULL, 0, dump_one, &dc, &err) < 0) {
		cli_warn("dump %s: %s", dc.dbname, err);
		rc = EX_IOERR;
	}
	if (dc.json)
		cli_put(dc.n > 0 ? "\n]\n" : "]\n");
	if (dc.skipped > 0) {
		cli_flush();
		cli_warn("%s: %zu record%s of an unknown version or garbled, skipped",
			 dc.dbname, dc.skipped, dc.skipped == 1 ? "" : "s");
	}
	return rc;
}

/* ------------------------------------------------------------------ */
/* tidy */

struct key {
	char *k;
	size_t klen;
	char *v;                 /* wait: the id */
	char why[64];
};

struct keylist {
	struct key *v;
	size_t n, cap;
};

static void keylist_add(struct keylist *l, const void *k, size_t klen,
			const void *v, size_t vlen, const char *why)
{
	struct key *e;

	if (l->n == l->cap) {
		size_t ncap = l->cap != 0 ? l->cap * 2 : 64;
		struct key *nv = realloc(l->v, ncap * sizeof(*nv));

		if (nv == NULL)
			cli_oom();
		l->v = nv;
		l->cap = ncap;
	}
	e = &l->v[l->n];
	memset(e, 0, sizeof(*e));
	e->k = malloc(klen + 1);
	if (e->k == NULL)
		cli_oom();
	memcpy(e->k, k, klen);
	e->k[klen] = '\0';
	e->klen = klen;
	if (v != NULL) {
		e->v = malloc(vlen + 1);
		if (e->v == NULL)
			cli_oom();
		memcpy(e->v, v, vlen);
		e->v[vlen] = '\0';
	}
	snprintf(e->why, sizeof(e->why), "%s", why);
	l->n++;
}

static void keylist_free(struct keylist *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].k);
		free(l->v[i].v);
	}
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* Is the message id on the spool (its -H file exists)? Anything that is
 * not a valid id counts as "not on the spool". */
static bool on_spool(const char *id, size_t len)
{
	char buf[Q_ID_LEN + 1], path[4096];
	struct stat st;

	if (len != Q_ID_LEN)
		return false;
	memcpy(buf, id, len);
	buf[len] = '\0';
	if (!q_id_valid(buf))
		return false;
	q_spool_path(cli.spool, buf, 'H', path, sizeof(path));
	if (stat(path, &st) == 0)
		return true;
	return errno != ENOENT;          /* in doubt, keep */
}

struct tidy_ctx {
	long long max_age;
	struct keylist del;
	size_t skipped;
};

static int tidy_retry_one(const void *k, size_t klen, const void *v, size_t vlen,
			  void *ctx)
{
	struct tidy_ctx *tc = ctx;
	const char *key = k;
	struct q_retry_rec r;
	const char *err = NULL;

	/* "<address>:<msgid>": an address key whose message is gone */
	if (klen > Q_ID_LEN + 1 && !(klen >= 2 && (key[0] == 'T' || key[0] == 'R') &&
				     key[1] == ':') &&
	    key[klen - Q_ID_LEN - 1] == ':' && memchr(key, '@', klen) != NULL &&
	    !on_spool(key + klen - Q_ID_LEN, Q_ID_LEN)) {
		keylist_add(&tc->del, k, klen, NULL, 0, "message no longer on the spool");
		return 0;
	}
	memset(&r, 0, sizeof(r));
	if (q_retry_rec_decode(v, vlen, &r, &err) < 0) {
		warn_key("retry", k, klen, err);
		tc->skipped++;
		return 0;
	}
	if (r.last_try != 0 && (long long)(cli.now - r.last_try) > tc->max_age) {
		char a[16], why[64];

		snprintf(why, sizeof(why), "not tried for %s",
			 q_time_format((long long)(cli.now - r.last_try), a, sizeof(a)));
		keylist_add(&tc->del, k, klen, NULL, 0, why);
	}
	q_retry_rec_clear(&r);
	return 0;
}

static int tidy_wait_one(const void *k, size_t klen, const void *v, size_t vlen,
			 void *ctx)
{
	struct tidy_ctx *tc = ctx;

	if (!on_spool(v, vlen))
		keylist_add(&tc->del, k, klen, v, vlen, "message no longer on the spool");
	return 0;
}

static int tidy_index_one(const void *k, size_t klen, const void *v, size_t vlen,
			  void *ctx)
{
	struct tidy_ctx *tc = ctx;

	(void)v;
	(void)vlen;
	if (!on_spool(k, klen))
		keylist_add(&tc->del, k, klen, NULL, 0, "message no longer on the spool");
	return 0;
}

/* Walk db with fn, then delete what it collected. Returns the number
 * removed; failures are counted in *errors. */
static size_t tidy_db(struct q_hints *h, enum q_db db, q_hints_iter_fn *fn,
		      struct tidy_ctx *tc, size_t *errors)
{
	const char *name = q_hints_db_name(h, db), *err = NULL;
	size_t removed = 0;

	tc->del.n = 0;
	if (q_hints_iter(h, db, NULL, 0, fn, tc, &err) < 0) {
		cli_warn("%s: %s", name, err);
		(*errors)++;
	}
	for (size_t i = 0; i < tc->del.n; i++) {
		struct key *e = &tc->del.v[i];
		int rc;

		if (db == Q_DB_WAIT)
			rc = q_wait_del(h, e->k, e->v, &err);
		else if (db == Q_DB_INDEX)
			rc = q_index_del(h, e->k, &err);
		else
			rc = q_hints_del(h, db, e->k, e->klen, &err);
		if (rc < 0) {
			cli_warn("%s: %s: %s", name, e->k, err);
			(*errors)++;
			continue;
		}
		if (rc == Q_NOTFOUND)
			continue;       /* gone meanwhile */
		cli_printf("%s: removed ", name);
		put_key(e->k, e->klen);
		if (e->v != NULL) {
			cli_put(" -> ");
			cli_puts_safe(e->v);
		}
		cli_printf(" (%s)\n", e->why);
		removed++;
		cli_flush_maybe();
	}
	for (size_t i = 0; i < tc->del.n; i++) {
		free(tc->del.v[i].k);
		free(tc->del.v[i].v);
	}
	tc->del.n = 0;
	return removed;
}

static int cmd_tidy(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct tidy_ctx tc;
	struct q_hints *h;
	size_t nr, nw, ni, ns = 0, errors = 0;
	const char *err = NULL;
	char a[16];
	int c;

	memset(&tc, 0, sizeof(tc));
	tc.max_age = 30 * 86400;
	while ((c = cli_sub_getopt(argc, argv, "t:h", lo)) != -1)
		if (c == 't')
			tc.max_age = cli_time_arg("-t", optarg);
	no_more_args(argc, argv);
	if (cli_spool_missing()) {
		cli_printf("tidy: no spool at %s yet; nothing to do\n",
			   cli.conf->spool_directory);
		return EX_OK;
	}
	h = cli_hints();

	nr = tidy_db(h, Q_DB_RETRY, tidy_retry_one, &tc, &errors);
	nw = tidy_db(h, Q_DB_WAIT, tidy_wait_one, &tc, &errors);
	ni = tidy_db(h, Q_DB_INDEX, tidy_index_one, &tc, &errors);
	if (q_serialize_clean(h, NULL, true, cli.now, &ns, &err) < 0) {
		cli_warn("%s: %s", q_hints_db_name(h, Q_DB_SERIALIZE), err);
		errors++;
	}
	keylist_free(&tc.del);
	cli_printf("tidy: removed %zu retry record%s (not tried for %s, or their "
		   "message is gone), %zu wait entr%s, %zu index entr%s, "
		   "%zu stale serialization slot%s; total %zu\n",
		   nr, nr == 1 ? "" : "s", q_time_format(tc.max_age, a, sizeof(a)),
		   nw, nw == 1 ? "y" : "ies", ni, ni == 1 ? "y" : "ies",
		   ns, ns == 1 ? "" : "s", nr + nw + ni + ns);
	if (tc.skipped > 0)
		cli_warn("retry: %zu record%s of an unknown version skipped (kept)",
			 tc.skipped, tc.skipped == 1 ? "" : "s");
	return errors > 0 ? EX_IOERR : EX_OK;
}

/* ------------------------------------------------------------------ */
/* delete */

static int cmd_delete(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	size_t missing = 0, failed = 0;
	enum q_db db;
	const char *name;
	int c, i;

	while ((c = cli_sub_getopt(argc, argv, "h", lo)) != -1)
		;
	if (argc - optind < 2)
		cli_usage_error("delete: give a database and one or more keys");
	db = db_arg(argv[optind]);
	name = q_hints_db_name(cli.hints, db);
	for (i = optind + 1; i < argc; i++) {
		const char *err = NULL;
		int rc = q_hints_del(cli.hints, db, argv[i], strlen(argv[i]), &err);

		if (rc == Q_NOTFOUND) {
			cli_warn("%s: no record '%s'", name, argv[i]);
			missing++;
		} else if (rc < 0) {
			cli_warn("%s: %s: %s", name, argv[i], err);
			failed++;
		} else {
			cli_printf("%s: deleted ", name);
			put_key(argv[i], strlen(argv[i]));
			cli_putc('\n');
		}
	}
	return failed > 0 ? EX_IOERR : missing > 0 ? EX_NOINPUT : EX_OK;
}

/* ------------------------------------------------------------------ */
/* rebuild */

struct route_cache_ent {
	char *domain;
	char *host;              /* first host of the route, or NULL (failed) */
};

struct rebuild_ctx {
	struct q_hints *h;
	struct q_conf *conf;
	struct route_cache_ent *rc;
	size_t nrc, caprc;
	size_t pairs, unrouted, errors;
};

static const char *route_first_host(struct rebuild_ctx *bc, const char *dom,
				    size_t len)
{
	struct q_hostlist_r hl;
	struct route_cache_ent *e;
	const char *err = NULL;

	for (size_t i = 0; i < bc->nrc; i++)
		if (strncasecmp(bc->rc[i].domain, dom, len) == 0 &&
		    bc->rc[i].domain[len] == '\0')
			return bc->rc[i].host;
	if (bc->nrc == bc->caprc) {
		size_t ncap = bc->caprc != 0 ? bc->caprc * 2 : 32;
		struct route_cache_ent *nv = realloc(bc->rc, ncap * sizeof(*nv));

		if (nv == NULL)
			cli_oom();
		bc->rc = nv;
		bc->caprc = ncap;
	}
	e = &bc->rc[bc->nrc++];
	e->domain = strndup(dom, len);
	e->host = NULL;
	if (e->domain == NULL)
		cli_oom();
	memset(&hl, 0, sizeof(hl));
	if (q_route_domain(bc->conf, e->domain, &hl, &err) == 0 && hl.n > 0) {
		e->host = strdup(hl.h[0].name);
		if (e->host == NULL)
			cli_oom();
	} else {
		cli_flush();
		fprintf(stderr, "%s: wait: domain '", cli.prog);
		q_fputs_safe(e->domain, stderr);
		fprintf(stderr, "' not routed now (%s): its messages get no wait "
			"entry\n", err != NULL ? err : "no hosts");
	}
	q_route_free(&hl);
	return e->host;
}

static int rebuild_one(const struct q_index_rec *r, void *ctx)
{
	struct rebuild_ctx *bc = ctx;

	if (r->npending == 0 || (r->flags & Q_ENV_FROZEN) != 0)
		return 0;
	for (const char *p = r->domains; p != NULL && *p != '\0';) {
		const char *comma = strchr(p, ',');
		size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);

		if (len > 0) {
			const char *host = route_first_host(bc, p, len);
			const char *err = NULL;

			if (host == NULL)
				bc->unrouted++;
			else if (q_wait_add(bc->h, host, r->id, &err) < 0) {
				cli_warn("wait: %s: %s", host, err);
				bc->errors++;
			} else {
				bc->pairs++;
			}
		}
		p = comma != NULL ? comma + 1 : NULL;
	}
	return 0;
}

static int cmd_rebuild(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct rebuild_ctx bc;
	const char *err = NULL;
	size_t n = 0;
	int c, rc = EX_OK;

	while ((c = cli_sub_getopt(argc, argv, "h", lo)) != -1)
		;
	no_more_args(argc, argv);
	cli_hints();
	if (q_index_rebuild(cli.spool, &n, &err) < 0)
		cli_die(EX_IOERR, "index: %s", err);
	cli_printf("index: rebuilt from the spool, %zu message%s\n", n,
		   n == 1 ? "" : "s");
	cli_flush();

	memset(&bc, 0, sizeof(bc));
	bc.h = cli.hints;
	bc.conf = cli_conf();
	if (q_hints_truncate(bc.h, Q_DB_WAIT, &err) < 0)
		cli_die(EX_IOERR, "%s: %s", q_hints_db_name(bc.h, Q_DB_WAIT), err);
	if (q_spool_list(cli.spool, rebuild_one, &bc, &err) < 0) {
		cli_warn("%s: %s", q_hints_db_name(bc.h, Q_DB_WAIT), err);
		rc = EX_IOERR;
	}
	cli_printf("%s: rebuilt from the pending recipients' routes, %zu entr%s "
		   "(%zu distinct domain%s routed", q_hints_db_name(bc.h, Q_DB_WAIT),
		   bc.pairs, bc.pairs == 1 ? "y" : "ies", bc.nrc, bc.nrc == 1 ? "" : "s");
	if (bc.unrouted > 0)
		cli_printf("; %zu recipient domain%s of messages could not be routed now",
			   bc.unrouted, bc.unrouted == 1 ? "" : "s");
	cli_put(")\n");
	for (size_t i = 0; i < bc.nrc; i++) {
		free(bc.rc[i].domain);
		free(bc.rc[i].host);
	}
	free(bc.rc);
	if (bc.errors > 0)
		rc = EX_IOERR;
	return rc;
}

/* ------------------------------------------------------------------ */
/* reboot */

static int cmd_reboot(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct q_hints *h;
	char boot[40];
	const char *err = NULL;
	size_t ns = 0, nss = 0;
	int c, rc = EX_OK;

	while ((c = cli_sub_getopt(argc, argv, "h", lo)) != -1)
		;
	no_more_args(argc, argv);
	if (q_boot_id(boot, sizeof(boot), &err) < 0)
		cli_die(EX_OSERR, "cannot tell the current boot: %s", err);
	if (cli_spool_missing()) {
		cli_printf("reboot: no spool at %s yet; nothing to do\n",
			   cli.conf->spool_directory);
		return EX_OK;
	}
	h = cli_hints();
	if (q_serialize_clean(h, boot, false, cli.now, &ns, &err) < 0) {
		cli_warn("%s: %s", q_hints_db_name(h, Q_DB_SERIALIZE), err);
		rc = EX_IOERR;
	}
	if (q_session_clean(h, boot, &nss, &err) < 0) {
		cli_warn("%s: %s", q_hints_db_name(h, Q_DB_SESSIONS), err);
		rc = EX_IOERR;
	}
	cli_printf("reboot: boot id %s\n", boot);
	cli_printf("%s: removed %zu slot%s from earlier boots\n",
		   q_hints_db_name(h, Q_DB_SERIALIZE), ns, ns == 1 ? "" : "s");
	cli_printf("%s: removed %zu record%s from earlier boots\n",
		   q_hints_db_name(h, Q_DB_SESSIONS), nss, nss == 1 ? "" : "s");
	return rc;
}

/* ------------------------------------------------------------------ */

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{ "dump", cmd_dump },
	{ "tidy", cmd_tidy },
	{ "delete", cmd_delete },
	{ "rebuild", cmd_rebuild },
	{ "reboot", cmd_reboot },
};

int main(int argc, char **argv)
{
	int i = cli_start("qhints", argc, argv, usage);
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
