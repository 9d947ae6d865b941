/*
 * q_serialize.c - per-host connection slots for serialize_hosts: at most
 * `limit` connections to a host at a time, across every process sharing
 * the hints environment.
 *
 * Records (database serialize-<transport>): key "<host>#<slot>" (host in
 * ASCII lower case, slot 0..limit-1), value version 1:
 *     u8 1, u32 slot, u64 pid, u64 taken (unix time), str boot_id
 * A slot is stale (free to take over) when its boot id is not the
 * current one, when it was taken more than Q_SLOT_STALE_SECS ago (or
 * that far in the future: a clock step), or when its pid is dead.
 *
 * Invariant: each slot is taken by an atomic read-check-write
 * (q_hints_update), so no two owners ever hold the same slot; take walks
 * the slots in order, one short transaction per slot, instead of one
 * transaction locking all of them (same guarantee, less contention).
 * A record this code cannot read (unknown version, garbage) is never
 * overwritten by take: it counts as held, and take's Q_BUSY names it;
 * q_serialize_clean leaves it too (qhints delete removes it).
 *
 * Diagnostics: "unknown record version N", "bad serialize record".
 * Complexity: take is O(limit) transactions; clean is one walk.
 */
#include "config.h"
#include "q_private.h"
#include "q/hints.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOT_VERSION 1
#define HOST_MAX 255

static int slot_key(char *buf, size_t size, const char *host, unsigned slot,
		    size_t *len_r, const char **error_r)
{
	size_t i, n;
	int w;

	if (host == NULL || (n = strlen(host)) == 0 || n > HOST_MAX)
		return q_err(error_r, "serialize: bad host name");
	w = snprintf(buf, size, "%s#%u", host, slot);
	if (w < 0 || (size_t)w >= size)
		return q_err(error_r, "serialize: host name too long");
	for (i = 0; i < n; i++)
		if (buf[i] >= 'A' && buf[i] <= 'Z')
			buf[i] = (char)(buf[i] - 'A' + 'a');
	*len_r = (size_t)w;
	return 0;
}

static int slot_encode(struct q_buf *b, const struct q_slot *s)
{
	q_buf_reset(b);
	if (q_rec_put_u8(b, SLOT_VERSION) < 0 ||
	    q_rec_put_u32(b, s->slot) < 0 ||
	    q_rec_put_u64(b, (uint64_t)(int64_t)s->pid) < 0 ||
	    q_rec_put_u64(b, (uint64_t)(int64_t)s->taken) < 0 ||
	    q_rec_put_str(b, s->boot_id) < 0)
		return -1;
	return 0;
}

int q_slot_decode(const void *val, size_t len, struct q_slot *s,
		  const char **error_r)
{
	struct q_rec_reader r;
	uint8_t version;
	char *boot;

	memset(s, 0, sizeof(*s));
	q_rec_reader_init(&r, val, len);
	version = q_rec_get_u8(&r);
	if (r.bad)
		return q_err(error_r, "empty serialize record");
	if (version != SLOT_VERSION)
		return q_err(error_r, "unknown record version %u", version);
	s->slot = q_rec_get_u32(&r);
	s->pid = (long)(int64_t)q_rec_get_u64(&r);
	s->taken = (time_t)(int64_t)q_rec_get_u64(&r);
	boot = q_rec_get_str(&r);
	if (r.bad || boot == NULL || strlen(boot) >= sizeof(s->boot_id)) {
		free(boot);
		memset(s, 0, sizeof(*s));
		return q_err(error_r, "bad serialize record (%zu bytes)", len);
	}
	memcpy(s->boot_id, boot, strlen(boot) + 1);
	free(boot);
	return 0;
}

bool q_slot_stale(const struct q_slot *s, time_t now, const char *boot_id)
{
	char cur[40];

	if (boot_id == NULL && q_boot_id(cur, sizeof(cur), NULL) == 0)
		boot_id = cur;
	if (boot_id != NULL && strcmp(s->boot_id, boot_id) != 0)
		return true;
	/* a damaged record may hold any time: no signed overflow, and a
	   difference that does not fit is as stale as can be */
	long long age;
	if (__builtin_sub_overflow((long long)now, (long long)s->taken, &age) ||
	    age > Q_SLOT_STALE_SECS || age < -(long long)Q_SLOT_STALE_SECS)
		return true;
	return !q_pid_alive(s->pid);
}

/* ---- take ---- */

struct take_ctx {
	const struct q_slot *mine;
	const char *boot_id;
	time_t now;
	bool took;
	bool unreadable;
	char why[200];          /* why an unreadable slot was skipped */
};

static int take_fn(const void *old, size_t oldlen, struct q_buf *out,
		   void *vctx)
{
	struct take_ctx *c = vctx;
	struct q_slot cur;
	const char *err;

	c->took = false;
	c->unreadable = false;
	if (old != NULL) {
		if (q_slot_decode(old, oldlen, &cur, &err) < 0) {
			c->unreadable = true;
			snprintf(c->why, sizeof(c->why), "%s", err);
			return Q_HINTS_KEEP;
		}
		if (!q_slot_stale(&cur, c->now, c->boot_id))
			return Q_HINTS_KEEP;
	}
	if (slot_encode(out, c->mine) < 0)
		return q_err(NULL, "%s", strerror(ENOMEM));
	c->took = true;
	return Q_HINTS_PUT;
}

int q_serialize_take(struct q_hints *h, const char *host, unsigned limit,
		     time_t now, const char *boot_id, unsigned *slot_r,
		     const char **error_r)
{
	struct q_slot mine;
	struct take_ctx c;
	char key[HOST_MAX + 16], cur[40], bad[HOST_MAX + 16 + 200 + 8] = "";
	size_t klen;
	unsigned i;

	if (limit == 0)
		return q_err(error_r, "serialize: limit must be at least 1");
	if (boot_id == NULL) {
		if (q_boot_id(cur, sizeof(cur), error_r) < 0)
			return -1;
		boot_id = cur;
	}
	if (strlen(boot_id) >= sizeof(mine.boot_id))
		return q_err(error_r, "serialize: boot id too long");
	memset(&mine, 0, sizeof(mine));
	mine.pid = (long)getpid();
	mine.taken = now;
	memcpy(mine.boot_id, boot_id, strlen(boot_id) + 1);
	for (i = 0; i < limit; i++) {
		if (slot_key(key, sizeof(key), host, i, &klen, error_r) < 0)
			return -1;
		mine.slot = i;
		memset(&c, 0, sizeof(c));
		c.mine = &mine;
		c.boot_id = boot_id;
		c.now = now;
		if (q_hints_update(h, Q_DB_SERIALIZE, key, klen, take_fn, &c,
				   error_r) < 0)
			return -1;
		if (c.took) {
			*slot_r = i;
			return 0;
		}
		if (c.unreadable && bad[0] == '\0')
			snprintf(bad, sizeof(bad), "%s: %s", key, c.why);
	}
	if (bad[0] != '\0')    /* say why, but it is still "busy" */
		q_err(error_r, "all %u slots of %s are held (%s, skipped)",
		      limit, host, bad);
	else
		q_err(error_r, "all %u slots of %s are held", limit, host);
	return Q_BUSY;
}

/* ---- release ---- */

struct release_ctx {
	long pid;
	bool ours;
};

static int release_fn(const void *old, size_t oldlen, struct q_buf *out,
		      void *vctx)
{
	struct release_ctx *c = vctx;
	struct q_slot cur;

	(void)out;
	c->ours = false;
	if (old == NULL || q_slot_decode(old, oldlen, &cur, NULL) < 0 ||
	    cur.pid != c->pid)
		return Q_HINTS_KEEP;
	c->ours = true;
	return Q_HINTS_DELETE;
}

int q_serialize_release(struct q_hints *h, const char *host, unsigned slot,
			const char **error_r)
{
	struct release_ctx c = { .pid = (long)getpid() };
	char key[HOST_MAX + 16];
	size_t klen;

	if (slot_key(key, sizeof(key), host, slot, &klen, error_r) < 0)
		return -1;
	if (q_hints_update(h, Q_DB_SERIALIZE, key, klen, release_fn, &c,
			   error_r) < 0)
		return -1;
	return c.ours ? 0 : Q_NOTFOUND;
}

/* ---- clean (qhints reboot) ---- */

struct clean_ctx {
	const char *boot_id;
	bool also_stale;
	time_t now;
	bool removed;
	struct q_buf keys;      /* keys to look at: u32 length + bytes */
};

static bool clean_wanted(const struct clean_ctx *c, const struct q_slot *s)
{
	if (strcmp(s->boot_id, c->boot_id) != 0)
		return true;
	return c->also_stale && q_slot_stale(s, c->now, c->boot_id);
}

static int clean_collect(const void *key, size_t klen, const void *val,
			 size_t vlen, void *vctx)
{
	struct clean_ctx *c = vctx;
	struct q_slot s;

	if (q_slot_decode(val, vlen, &s, NULL) < 0 || !clean_wanted(c, &s))
		return 0;
	if (q_rec_put_u32(&c->keys, (uint32_t)klen) < 0 ||
	    q_buf_add(&c->keys, key, klen) < 0)
		return q_err(NULL, "%s", strerror(ENOMEM));
	return 0;
}

/* Re-checked under the record's lock: it may have been taken again. */
static int clean_fn(const void *old, size_t oldlen, struct q_buf *out,
		    void *vctx)
{
	struct clean_ctx *c = vctx;
	struct q_slot s;

	(void)out;
	c->removed = false;
	if (old == NULL || q_slot_decode(old, oldlen, &s, NULL) < 0 ||
	    !clean_wanted(c, &s))
		return Q_HINTS_KEEP;
	c->removed = true;
	return Q_HINTS_DELETE;
}

int q_serialize_clean(struct q_hints *h, const char *boot_id,
		      bool also_stale, time_t now, size_t *removed_r,
		      const char **error_r)
{
	struct clean_ctx c = { .also_stale = also_stale, .now = now };
	struct q_rec_reader r;
	char cur[40];
	int ret = 0;

	*removed_r = 0;
	if (boot_id == NULL) {
		if (q_boot_id(cur, sizeof(cur), error_r) < 0)
			return -1;
		boot_id = cur;
	}
	c.boot_id = boot_id;
	/* Collect first, delete after: the walk holds no lock anyway, but
	 * this keeps the walk's position simple. */
	if (q_hints_iter(h, Q_DB_SERIALIZE, NULL, 0, clean_collect, &c,
			 error_r) < 0) {
		q_buf_free(&c.keys);
		return -1;
	}
	q_rec_reader_init(&r, c.keys.data, c.keys.len);
	while (r.left > 0) {
		uint32_t n = q_rec_get_u32(&r);
		const void *k = r.p;

		if (r.bad || n > r.left)
			break;
		r.p += n;
		r.left -= n;
		if (q_hints_update(h, Q_DB_SERIALIZE, k, n, clean_fn, &c,
				   error_r) < 0) {
			ret = -1;
			break;
		}
		if (c.removed)
			(*removed_r)++;
	}
	q_buf_free(&c.keys);
	return ret;
}
