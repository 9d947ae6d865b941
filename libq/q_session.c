/*
 * q_session.c - the live-session registry read by qtop: one record per
 * delivery worker with an open connection (database "sessions").
 *
 * Records: key "<pid>.<worker>" (decimal), value version 1:
 *     u8 1, u64 pid, u32 worker, str boot_id, str host, str ip, u32 port,
 *     str tls, str state, str msgid, u32 msgs, u64 bytes, u64 started,
 *     u64 changed
 * (an empty tls or msgid string stands for NULL).
 *
 * Invariant: a listing never shows a session of a dead process or of an
 * earlier boot; such records are deleted as the listing meets them (the
 * delete re-checks the record under its lock, so a record rewritten by a
 * new process with the same pid and worker survives).  A record this code
 * cannot read (unknown version, garbage) is skipped, not deleted.
 *
 * Diagnostics: "unknown record version N", "bad session record".
 * Complexity: list and clean are one walk of the database.
 */
#include "config.h"
#include "q_private.h"
#include "q/hints.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SESSION_VERSION 1

void q_session_rec_clear(struct q_session_rec *s)
{
	free(s->host);
	free(s->ip);
	free(s->tls);
	free(s->state);
	free(s->msgid);
	memset(s, 0, sizeof(*s));
}

static size_t session_key(char *buf, size_t size, long pid, uint32_t worker)
{
	int n = snprintf(buf, size, "%ld.%u", pid, (unsigned)worker);

	return n < 0 ? 0 : (size_t)n;
}

static int session_encode(struct q_buf *b, const struct q_session_rec *s,
			  const char *boot_id)
{
	q_buf_reset(b);
	if (q_rec_put_u8(b, SESSION_VERSION) < 0 ||
	    q_rec_put_u64(b, (uint64_t)(int64_t)s->pid) < 0 ||
	    q_rec_put_u32(b, s->worker) < 0 ||
	    q_rec_put_str(b, boot_id) < 0 ||
	    q_rec_put_str(b, s->host) < 0 ||
	    q_rec_put_str(b, s->ip) < 0 ||
	    q_rec_put_u32(b, s->port) < 0 ||
	    q_rec_put_str(b, s->tls) < 0 ||
	    q_rec_put_str(b, s->state) < 0 ||
	    q_rec_put_str(b, s->msgid) < 0 ||
	    q_rec_put_u32(b, s->msgs) < 0 ||
	    q_rec_put_u64(b, s->bytes) < 0 ||
	    q_rec_put_u64(b, (uint64_t)(int64_t)s->started) < 0 ||
	    q_rec_put_u64(b, (uint64_t)(int64_t)s->changed) < 0)
		return -1;
	return 0;
}

static char *empty_null(char *s)
{
	if (s != NULL && *s == '\0') {
		free(s);
		return NULL;
	}
	return s;
}

int q_session_decode(const void *val, size_t len, struct q_session_rec *s,
		     const char **error_r)
{
	struct q_rec_reader r;
	uint8_t version;
	char *boot;

	memset(s, 0, sizeof(*s));
	q_rec_reader_init(&r, val, len);
	version = q_rec_get_u8(&r);
	if (r.bad)
		return q_err(error_r, "empty session record");
	if (version != SESSION_VERSION)
		return q_err(error_r, "unknown record version %u", version);
	s->pid = (long)(int64_t)q_rec_get_u64(&r);
	s->worker = q_rec_get_u32(&r);
	boot = q_rec_get_str(&r);
	s->host = q_rec_get_str(&r);
	s->ip = q_rec_get_str(&r);
	s->port = q_rec_get_u32(&r);
	s->tls = q_rec_get_str(&r);
	s->state = q_rec_get_str(&r);
	s->msgid = q_rec_get_str(&r);
	s->msgs = q_rec_get_u32(&r);
	s->bytes = q_rec_get_u64(&r);
	s->started = (time_t)(int64_t)q_rec_get_u64(&r);
	s->changed = (time_t)(int64_t)q_rec_get_u64(&r);
	if (r.bad || boot == NULL || strlen(boot) >= sizeof(s->boot_id)) {
		free(boot);
		q_session_rec_clear(s);
		return q_err(error_r, "bad session record (%zu bytes)", len);
	}
	memcpy(s->boot_id, boot, strlen(boot) + 1);
	free(boot);
	s->tls = empty_null(s->tls);
	s->msgid = empty_null(s->msgid);
	return 0;
}

int q_session_put(struct q_hints *h, const struct q_session_rec *s,
		  const char **error_r)
{
	struct q_buf b = { 0 };
	char key[64], cur[40];
	const char *boot_id = s->boot_id;
	size_t klen;
	int ret;

	if (boot_id[0] == '\0') {
		if (q_boot_id(cur, sizeof(cur), error_r) < 0)
			return -1;
		boot_id = cur;
	}
	if (memchr(s->boot_id, '\0', sizeof(s->boot_id)) == NULL)
		return q_err(error_r, "session: boot id not terminated");
	klen = session_key(key, sizeof(key), s->pid, s->worker);
	if (session_encode(&b, s, boot_id) < 0) {
		q_buf_free(&b);
		return q_err(error_r, "session: %s", strerror(errno ? errno
								    : ENOMEM));
	}
	ret = q_hints_put(h, Q_DB_SESSIONS, key, klen, b.data, b.len, error_r);
	q_buf_free(&b);
	return ret;
}

int q_session_del(struct q_hints *h, long pid, uint32_t worker,
		  const char **error_r)
{
	char key[64];
	size_t klen = session_key(key, sizeof(key), pid, worker);

	return q_hints_del(h, Q_DB_SESSIONS, key, klen, error_r);
}

/* ---- list and clean: walk, then delete what is gone ---- */

enum { GONE_NO, GONE_DEAD, GONE_BOOT };

static int gone(const struct q_session_rec *s, const char *boot_id,
		bool check_pid)
{
	if (strcmp(s->boot_id, boot_id) != 0)
		return GONE_BOOT;
	if (check_pid && !q_pid_alive(s->pid))
		return GONE_DEAD;
	return GONE_NO;
}

struct walk_ctx {
	struct q_hints *h;
	const char *boot_id;
	bool check_pid;          /* list: dead pids go too; clean: boot only */
	q_session_fn *fn;        /* NULL for clean */
	void *ctx;
	struct q_buf doomed;     /* keys to delete: u32 length + bytes */
	bool stopped;
};

static int walk_fn(const void *key, size_t klen, const void *val,
		   size_t vlen, void *vctx)
{
	struct walk_ctx *c = vctx;
	struct q_session_rec s;
	int r;

	if (q_session_decode(val, vlen, &s, NULL) < 0)
		return 0;          /* unknown version or garbage: skipped */
	if (gone(&s, c->boot_id, c->check_pid) != GONE_NO) {
		q_session_rec_clear(&s);
		if (q_rec_put_u32(&c->doomed, (uint32_t)klen) < 0 ||
		    q_buf_add(&c->doomed, key, klen) < 0)
			return q_err(NULL, "%s", strerror(ENOMEM));
		return 0;
	}
	r = c->fn != NULL ? c->fn(&s, c->ctx) : 0;
	q_session_rec_clear(&s);
	if (r > 0)
		c->stopped = true;
	return r;
}

struct del_ctx {
	const char *boot_id;
	bool check_pid;
	bool removed;
};

static int del_fn(const void *old, size_t oldlen, struct q_buf *out,
		  void *vctx)
{
	struct del_ctx *c = vctx;
	struct q_session_rec s;
	int g;

	(void)out;
	c->removed = false;
	if (old == NULL || q_session_decode(old, oldlen, &s, NULL) < 0)
		return Q_HINTS_KEEP;
	g = gone(&s, c->boot_id, c->check_pid);
	q_session_rec_clear(&s);
	if (g == GONE_NO)
		return Q_HINTS_KEEP;
	c->removed = true;
	return Q_HINTS_DELETE;
}

static int session_walk(struct q_hints *h, const char *boot_id,
			bool check_pid, q_session_fn *fn, void *ctx,
			size_t *removed_r, const char **error_r)
{
	struct walk_ctx c = { .h = h, .check_pid = check_pid, .fn = fn,
			      .ctx = ctx };
	struct del_ctx d = { .check_pid = check_pid };
	struct q_rec_reader r;
	char cur[40];
	int ret;

	if (removed_r != NULL)
		*removed_r = 0;
	if (boot_id == NULL) {
		if (q_boot_id(cur, sizeof(cur), error_r) < 0)
			return -1;
		boot_id = cur;
	}
	c.boot_id = d.boot_id = boot_id;
	ret = q_hints_iter(h, Q_DB_SESSIONS, NULL, 0, walk_fn, &c, error_r);
	if (ret < 0) {
		q_buf_free(&c.doomed);
		return -1;
	}
	q_rec_reader_init(&r, c.doomed.data, c.doomed.len);
	while (r.left > 0) {
		uint32_t n = q_rec_get_u32(&r);
		const void *k = r.p;

		if (r.bad || n > r.left)
			break;
		r.p += n;
		r.left -= n;
		if (q_hints_update(h, Q_DB_SESSIONS, k, n, del_fn, &d,
				   error_r) < 0) {
			ret = -1;
			break;
		}
		if (d.removed && removed_r != NULL)
			(*removed_r)++;
	}
	q_buf_free(&c.doomed);
	return ret;
}

int q_session_list(struct q_hints *h, q_session_fn *fn, void *ctx,
		   const char **error_r)
{
	return session_walk(h, NULL, true, fn, ctx, NULL, error_r);
}

int q_session_clean(struct q_hints *h, const char *boot_id,
		    size_t *removed_r, const char **error_r)
{
	return session_walk(h, boot_id, false, NULL, NULL, removed_r, error_r);
}
