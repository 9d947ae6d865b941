/*
 * q_index.c - the queue index: a hint in the hints database "index"
 * (id -> struct q_index_rec) that makes listing fast without opening
 * every -H file, and the listing that checks it against the spool.
 *
 * Record (value) layout, through the q_rec_* writers of q/hints.h:
 *     u8 version (1), str id, u64 arrival, u64 size, u32 nrcpt,
 *     u32 npending, u32 flags, u64 next_try, str sender, str rcpt1,
 *     str domains, str rcpts
 * The key is the 16 bytes of the id (no NUL), so the btree's byte order
 * is the id order, which is the arrival order.
 *
 * Invariants:
 * - The spool is the truth. q_spool_list never shows an id whose -H does
 *   not exist: it merges the index (walked in key order) with a scan of
 *   the spool's directories (sorted ids), deletes entries whose -H is
 *   gone, and reads -H for messages the index lacks. An entry met in the
 *   index but not in the scan is checked with stat() before it is
 *   dropped (the message may have been created after the scan).
 * - No callback runs while a database cursor is open: the index is copied
 *   out first (one pass, raw values), then merged, so fn may lock, commit
 *   or remove messages. Repairs are written after the walk, each with
 *   q_hints_update "put unless a readable record is there", so a listing
 *   never overwrites what a concurrent commit just wrote.
 * - A record that does not decode (unknown version, garbled) is treated
 *   as missing: the -H is read again and the record rewritten.
 *
 * Cost: q_spool_list is O(N log N) in the number of messages: one index
 *   walk (values copied out, O(N) memory), a readdir of each input/<c>/
 *   whose directory stamp (below) does not hold, one qsort of the ids
 *   read. With every stamp holding (a spool whose directories did not
 *   change for 2 s) no directory is read at all; on a spool being written
 *   to, every changed directory is read (about twice the time).
 *   No file is opened per message when the index is complete. Entries
 *   are not checked against the contents of -H: an entry goes stale if a
 *   commit's index update fails (until q_index_rebuild). q_spool_count
 *   reads only the index.
 */
#include "config.h"
#include "q_private.h"
#include "q/spool.h"
#include "q/hints.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_VERSION 1
#define LEFTOVER_AGE (24 * 3600)   /* rebuild removes older leftovers */

/* ------------------------------------------------------------------ */
/* records */

void q_index_rec_clear(struct q_index_rec *r)
{
	free(r->sender);
	free(r->rcpt1);
	free(r->domains);
	free(r->rcpts);
	memset(r, 0, sizeof(*r));
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int q_index_rec_from_env(struct q_index_rec *r, const struct q_env *env,
			 time_t next_try)
{
	struct q_buf dom = { 0 }, rc = { 0 };
	char **doms = NULL;
	size_t ndom = 0;
	const char *first = NULL;
	int ret = -1;

	memset(r, 0, sizeof(*r));
	memcpy(r->id, env->id, sizeof(r->id));
	r->arrival = env->arrival;
	r->size = env->size;
	r->nrcpt = (uint32_t)env->nrcpt;
	r->flags = env->flags;
	r->next_try = next_try;
	if (env->nrcpt > 0 && (doms = calloc(env->nrcpt, sizeof(*doms))) == NULL)
		goto out;
	for (size_t i = 0; i < env->nrcpt; i++) {
		const struct q_rcpt *p = &env->rcpt[i];
		const char *at;

		if (q_buf_printf(&rc, "%c %s\n", p->state, p->addr) < 0)
			goto out;
		if (p->state != Q_RCPT_PENDING)
			continue;
		r->npending++;
		if (first == NULL)
			first = p->addr;
		at = strrchr(p->addr, '@');
		if (at == NULL || at[1] == '\0')
			continue;
		if ((doms[ndom] = strdup(at + 1)) == NULL)
			goto out;
		for (char *c = doms[ndom]; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		ndom++;
	}
	if (first == NULL && env->nrcpt > 0)
		first = env->rcpt[0].addr;
	if (ndom > 1)
		qsort(doms, ndom, sizeof(*doms), cmp_str);
	for (size_t i = 0; i < ndom; i++) {
		if (i > 0 && strcmp(doms[i], doms[i - 1]) == 0)
			continue;
		if ((dom.len > 0 && q_buf_addc(&dom, ',') < 0) ||
		    q_buf_adds(&dom, doms[i]) < 0)
			goto out;
	}
	if ((r->sender = strdup(env->sender != NULL ? env->sender : "")) == NULL ||
	    (r->rcpt1 = strdup(first != NULL ? first : "")) == NULL ||
	    (r->domains = strdup(dom.data != NULL ? dom.data : "")) == NULL ||
	    (r->rcpts = strdup(rc.data != NULL ? rc.data : "")) == NULL)
		goto out;
	ret = 0;
out:
	for (size_t i = 0; i < ndom; i++)
		free(doms[i]);
	free(doms);
	q_buf_free(&dom);
	q_buf_free(&rc);
	if (ret < 0) {
		q_index_rec_clear(r);
		q_err(NULL, "out of memory");
	}
	return ret;
}

int q_index_rec_encode(const struct q_index_rec *r, struct q_buf *out)
{
	int e = 0;

	e |= q_rec_put_u8(out, INDEX_VERSION);
	e |= q_rec_put_str(out, r->id);
	e |= q_rec_put_u64(out, (uint64_t)r->arrival);
	e |= q_rec_put_u64(out, r->size);
	e |= q_rec_put_u32(out, r->nrcpt);
	e |= q_rec_put_u32(out, r->npending);
	e |= q_rec_put_u32(out, r->flags);
	e |= q_rec_put_u64(out, (uint64_t)r->next_try);
	e |= q_rec_put_str(out, r->sender);
	e |= q_rec_put_str(out, r->rcpt1);
	e |= q_rec_put_str(out, r->domains);
	e |= q_rec_put_str(out, r->rcpts);
	return e == 0 ? 0 : -1;
}

int q_index_rec_decode(const void *val, size_t len, struct q_index_rec *r,
		       const char **error_r)
{
	struct q_rec_reader rd;
	uint8_t ver;
	char *id;

	memset(r, 0, sizeof(*r));
	q_rec_reader_init(&rd, val, len);
	ver = q_rec_get_u8(&rd);
	if (rd.bad)
		return q_err(error_r, "empty index record");
	if (ver != INDEX_VERSION)
		return q_err(error_r, "index record version %u unknown "
			     "(this is version %d)", ver, INDEX_VERSION);
	id = q_rec_get_str(&rd);
	r->arrival = (time_t)q_rec_get_u64(&rd);
	r->size = q_rec_get_u64(&rd);
	r->nrcpt = q_rec_get_u32(&rd);
	r->npending = q_rec_get_u32(&rd);
	r->flags = q_rec_get_u32(&rd);
	r->next_try = (time_t)q_rec_get_u64(&rd);
	r->sender = q_rec_get_str(&rd);
	r->rcpt1 = q_rec_get_str(&rd);
	r->domains = q_rec_get_str(&rd);
	r->rcpts = q_rec_get_str(&rd);
	if (rd.bad || rd.left != 0 || !q_id_valid(id) ||
	    r->npending > r->nrcpt) {
		free(id);
		q_index_rec_clear(r);
		return q_err(error_r, "garbled index record");
	}
	memcpy(r->id, id, sizeof(r->id));
	free(id);
	return 0;
}

/* ------------------------------------------------------------------ */
/* single records */

int q_index_put(struct q_hints *h, const struct q_index_rec *r,
		const char **error_r)
{
	struct q_buf b = { 0 };
	int ret;

	if (!q_id_valid(r->id))
		return q_err(error_r, "invalid message id");
	if (q_index_rec_encode(r, &b) < 0) {
		q_buf_free(&b);
		return q_err(error_r, "out of memory");
	}
	ret = q_hints_put(h, Q_DB_INDEX, r->id, Q_ID_LEN, b.data, b.len, error_r);
	q_buf_free(&b);
	return ret;
}

int q_index_get(struct q_hints *h, const char *id, struct q_index_rec *r,
		const char **error_r)
{
	struct q_buf b = { 0 };
	int ret;

	memset(r, 0, sizeof(*r));
	if (!q_id_valid(id))
		return q_err(error_r, "invalid message id");
	ret = q_hints_get(h, Q_DB_INDEX, id, Q_ID_LEN, &b, error_r);
	if (ret == 0 && q_index_rec_decode(b.data, b.len, r, error_r) < 0)
		ret = q_err(error_r, "index record of %s: %s", id, q_err_last());
	else if (ret == 0 && strcmp(r->id, id) != 0) {
		q_index_rec_clear(r);
		ret = q_err(error_r, "index record of %s names another id", id);
	}
	q_buf_free(&b);
	return ret;
}

int q_index_del(struct q_hints *h, const char *id, const char **error_r)
{
	if (!q_id_valid(id))
		return q_err(error_r, "invalid message id");
	return q_hints_del(h, Q_DB_INDEX, id, Q_ID_LEN, error_r);
}

struct put_ctx {
	const struct q_buf *val;
	const char *id;
};

static int put_unless_valid_fn(const void *old, size_t oldlen,
			       struct q_buf *out, void *vctx)
{
	struct put_ctx *c = vctx;
	struct q_index_rec r;

	if (old != NULL && q_index_rec_decode(old, oldlen, &r, NULL) == 0) {
		bool same = strcmp(r.id, c->id) == 0;
		q_index_rec_clear(&r);
		if (same)
			return Q_HINTS_KEEP;
	}
	if (q_buf_add(out, c->val->data, c->val->len) < 0)
		return -1;
	return Q_HINTS_PUT;
}

/* Write r unless the index already holds a readable record for it (which
 * a concurrent commit may just have written). */
static int put_unless_valid(struct q_hints *h, const struct q_index_rec *r,
			    const char **error_r)
{
	struct q_buf b = { 0 };
	struct put_ctx c = { &b, r->id };
	int ret;

	if (q_index_rec_encode(r, &b) < 0) {
		q_buf_free(&b);
		return q_err(error_r, "out of memory");
	}
	ret = q_hints_update(h, Q_DB_INDEX, r->id, Q_ID_LEN,
			     put_unless_valid_fn, &c, error_r);
	q_buf_free(&b);
	return ret;
}

/* ------------------------------------------------------------------ */
/* the spool side */

struct idvec {
	char (*v)[Q_ID_LEN];
	size_t n, cap;
};

static int idvec_push(const char *id, void *vctx)
{
	struct idvec *iv = vctx;

	if (iv->n == iv->cap) {
		size_t ncap = iv->cap ? iv->cap * 2 : 1024;
		void *p = realloc(iv->v, ncap * sizeof(*iv->v));
		if (p == NULL)
			return q_err(NULL, "out of memory");
		iv->v = p;
		iv->cap = ncap;
	}
	memcpy(iv->v[iv->n++], id, Q_ID_LEN);
	return 0;
}

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, Q_ID_LEN);
}

static int scan_sorted(struct q_spool *s, struct idvec *iv,
		       const char **error_r)
{
	if (q_spool_scan(s, idvec_push, iv, error_r) < 0)
		return q_err(error_r, "%s", q_err_last());
	if (iv->n > 1)
		qsort(iv->v, iv->n, sizeof(*iv->v), cmp_id);
	return 0;
}

static bool h_exists(struct q_spool *s, const char *id)
{
	char path[PATH_MAX];
	struct stat st;

	q_spool_path(s, id, 'H', path, sizeof(path));
	return stat(path, &st) == 0;
}

/* Read id's -H into a record. 0, Q_NOTFOUND (gone, or garbled and moved
 * aside: skip it), -1. */
static int rec_from_spool(struct q_spool *s, const char *id,
			  struct q_index_rec *r, const char **error_r)
{
	struct q_env *env = NULL;
	int ret = q_spool_read(s, id, &env, error_r);

	if (ret < 0 && !h_exists(s, id))
		return Q_NOTFOUND;   /* moved to corrupt/, or removed */
	if (ret != 0)
		return ret;
	ret = q_index_rec_from_env(r, env, 0);
	q_env_free(&env);
	if (ret < 0)
		return q_err(error_r, "out of memory");
	return 0;
}

/* rec_from_spool for the idx-th id of a directory scan (raw, no NUL). */
static int rec_from_scan(struct q_spool *s, const struct idvec *iv,
			 size_t idx, struct q_index_rec *r, const char **error_r)
{
	char id[Q_ID_LEN + 1];

	memcpy(id, iv->v[idx], Q_ID_LEN);
	id[Q_ID_LEN] = '\0';
	memset(r, 0, sizeof(*r));
	return rec_from_spool(s, id, r, error_r);
}

/* ------------------------------------------------------------------ */
/* listing */

struct ient {
	char id[Q_ID_LEN];
	size_t off;              /* of the value in vals */
	size_t len;
};

struct lctx {
	struct ient *v;
	size_t n, cap;
	struct q_buf vals;
	struct q_buf badkeys;    /* u32 length + bytes, to delete */
	bool nomem;
};

static int collect_fn(const void *key, size_t klen, const void *val,
		      size_t vlen, void *vctx)
{
	struct lctx *c = vctx;
	char id[Q_ID_LEN + 1];

	if (klen == Q_ID_LEN) {
		memcpy(id, key, Q_ID_LEN);
		id[Q_ID_LEN] = '\0';
	}
	if (klen != Q_ID_LEN || !q_id_valid(id)) {
		uint32_t l = (uint32_t)klen;
		if (q_buf_add(&c->badkeys, &l, sizeof(l)) < 0 ||
		    q_buf_add(&c->badkeys, key, klen) < 0)
			goto nomem;
		return 0;
	}
	if (c->n == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 1024;
		void *p = realloc(c->v, ncap * sizeof(*c->v));
		if (p == NULL)
			goto nomem;
		c->v = p;
		c->cap = ncap;
	}
	memcpy(c->v[c->n].id, id, Q_ID_LEN);
	c->v[c->n].off = c->vals.len;
	c->v[c->n].len = vlen;
	if (q_buf_add(&c->vals, val, vlen) < 0)
		goto nomem;
	c->n++;
	return 0;
nomem:
	c->nomem = true;
	return -1;
}

/* Repairs made after the walk. */
struct fixes {
	struct idvec del;
	struct q_index_rec *put;
	size_t nput, capput;
	bool lost;               /* a repair could not be queued */
};

static int fixes_put(struct fixes *f, struct q_index_rec *r)
{
	if (f->nput == f->capput) {
		size_t ncap = f->capput ? f->capput * 2 : 64;
		void *p = realloc(f->put, ncap * sizeof(*f->put));
		if (p == NULL)
			return -1;
		f->put = p;
		f->capput = ncap;
	}
	f->put[f->nput++] = *r;      /* takes the strings */
	memset(r, 0, sizeof(*r));
	return 0;
}

/* Write the repairs; true when every one of them was made. */
static bool fixes_apply(struct q_hints *h, struct fixes *f)
{
	char id[Q_ID_LEN + 1];
	bool ok = !f->lost;

	for (size_t i = 0; i < f->del.n; i++) {
		memcpy(id, f->del.v[i], Q_ID_LEN);
		id[Q_ID_LEN] = '\0';
		if (q_index_del(h, id, NULL) < 0)
			ok = false;
	}
	for (size_t i = 0; i < f->nput; i++) {
		if (put_unless_valid(h, &f->put[i], NULL) < 0)
			ok = false;
		q_index_rec_clear(&f->put[i]);
	}
	free(f->del.v);
	free(f->put);
	return ok;
}

/* q_index_rec_decode without a malloc per string: the strings are
 * copied (NUL-terminated) into scratch, and r points into it (so r must
 * not be cleared). The same checks as q_index_rec_decode. */
static int rec_decode_view(const void *val, size_t len, const char *id,
			   struct q_index_rec *r, struct q_buf *scratch)
{
	struct q_rec_reader rd;
	size_t off[5];
	uint32_t n;

	memset(r, 0, sizeof(*r));
	q_buf_reset(scratch);
	q_rec_reader_init(&rd, val, len);
	if (q_rec_get_u8(&rd) != INDEX_VERSION || rd.bad)
		return -1;
	for (int k = 0; k < 5; k++) {
		n = q_rec_get_u32(&rd);
		if (rd.bad || n > rd.left)
			return -1;
		off[k] = scratch->len;
		if (q_buf_add(scratch, rd.p, n) < 0 || q_buf_addc(scratch, '\0') < 0)
			return -1;
		rd.p += n;
		rd.left -= n;
		if (k > 0)
			continue;
		/* the id, then the fixed fields */
		if (n != Q_ID_LEN || memcmp(scratch->data + off[0], id, Q_ID_LEN) != 0)
			return -1;
		r->arrival = (time_t)q_rec_get_u64(&rd);
		r->size = q_rec_get_u64(&rd);
		r->nrcpt = q_rec_get_u32(&rd);
		r->npending = q_rec_get_u32(&rd);
		r->flags = q_rec_get_u32(&rd);
		r->next_try = (time_t)q_rec_get_u64(&rd);
		if (rd.bad || r->npending > r->nrcpt)
			return -1;
	}
	if (rd.left != 0)
		return -1;
	memcpy(r->id, id, Q_ID_LEN);
	r->id[Q_ID_LEN] = '\0';
	r->sender = scratch->data + off[1];
	r->rcpt1 = scratch->data + off[2];
	r->domains = scratch->data + off[3];
	r->rcpts = scratch->data + off[4];
	return 0;
}

/* Read id's -H into r (the index lacks it or its record does not decode)
 * and queue a repair. 0, Q_NOTFOUND (skip), -1. */
static int rec_repair(struct q_spool *s, const char *id, struct q_index_rec *r,
		      struct fixes *f, const char **error_r)
{
	struct q_index_rec copy;
	int ret;

	ret = rec_from_spool(s, id, r, error_r);
	if (ret != 0)
		return ret;
	/* queue a copy for the index */
	memset(&copy, 0, sizeof(copy));
	copy = *r;
	copy.sender = strdup(r->sender);
	copy.rcpt1 = strdup(r->rcpt1);
	copy.domains = strdup(r->domains);
	copy.rcpts = strdup(r->rcpts);
	if (copy.sender == NULL || copy.rcpt1 == NULL || copy.domains == NULL ||
	    copy.rcpts == NULL || fixes_put(f, &copy) < 0) {
		q_index_rec_clear(&copy);   /* a repair lost: only a hint */
		f->lost = true;
	}
	return 0;
}

/* ---- directory stamps ----
 * A stamp says: "when input/<c>/ had this inode and ctime, it held count
 * -H files, and the index held exactly those ids for <c>". A later listing
 * that finds the same inode and ctime, the same boot, and count index
 * entries for <c> trusts the index for <c> without reading the directory.
 * Every creation, removal or rename in the directory changes its ctime
 * (which no one can set back); a stamp is only taken when the ctime was
 * already 2 seconds old before the scan and unchanged after it, so a
 * change within the same clock tick cannot hide behind it. The boot id
 * guards against index writes lost in an OS crash (the hints do not
 * fsync); the count against entries deleted or added behind our back.
 * Stamps live in <spool>/db/index-stamps (a hint: any doubt = a scan). */

#define NSPLIT 62
#define STAMP_FILE "db/index-stamps"
#define STAMP_MIN_AGE 2

struct dstamp {
	bool valid;
	uint64_t ino;
	int64_t sec;
	long nsec;
	uint32_t count;
};

static int split_of(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'Z')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 36;
	return -1;
}

static void stamps_load(struct q_spool *s, const char *boot,
			struct dstamp st[NSPLIT])
{
	char path[PATH_MAX], buf[8192], head[128];
	const char *p, *end;
	ssize_t n;
	int fd;

	memset(st, 0, sizeof(*st) * NSPLIT);
	snprintf(path, sizeof(path), "%s/" STAMP_FILE, q_spool_dir(s));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	end = buf + n;
	snprintf(head, sizeof(head), "qkit-index-stamps 1 %s\n", boot);
	if (strncmp(buf, head, strlen(head)) != 0)
		return;
	for (p = buf + strlen(head); p < end;) {
		char c;
		unsigned long long ino, cnt;
		long long sec;
		long nsec;
		int used = 0, i;

		if (strcmp(p, "end\n") == 0)
			return;       /* complete: keep what was read */
		if (sscanf(p, "%c %llu %lld %ld %llu\n%n", &c, &ino, &sec, &nsec,
			   &cnt, &used) != 5 || used == 0 || p[used - 1] != '\n' ||
		    (i = split_of(c)) < 0 || cnt > UINT32_MAX)
			break;
		st[i] = (struct dstamp){ true, ino, sec, nsec, (uint32_t)cnt };
		p += used;
	}
	memset(st, 0, sizeof(*st) * NSPLIT);   /* no "end": trust nothing */
}

static void stamps_save(struct q_spool *s, const char *boot,
			const struct dstamp st[NSPLIT])
{
	char path[PATH_MAX], tmp[PATH_MAX + 32];
	struct q_buf b = { 0 };
	int fd, e = 0;

	e |= q_buf_printf(&b, "qkit-index-stamps 1 %s\n", boot);
	for (int i = 0; i < NSPLIT; i++)
		if (st[i].valid)
			e |= q_buf_printf(&b, "%c %llu %lld %ld %lu\n", q_b62[i],
					  (unsigned long long)st[i].ino,
					  (long long)st[i].sec, st[i].nsec,
					  (unsigned long)st[i].count);
	e |= q_buf_adds(&b, "end\n");
	snprintf(path, sizeof(path), "%s/" STAMP_FILE, q_spool_dir(s));
	snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid());
	if (e == 0 && (fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
				 O_NOFOLLOW, 0600)) >= 0) {
		ssize_t w = write(fd, b.data, b.len);
		close(fd);
		if (w != (ssize_t)b.len || rename(tmp, path) < 0)
			unlink(tmp);
	}
	q_buf_free(&b);
}

static void stamps_drop(struct q_spool *s)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/" STAMP_FILE, q_spool_dir(s));
	(void)unlink(path);
}

/* stat input/<c>: 0, 1 when it does not exist, -1 */
static int split_stat(struct q_spool *s, int i, struct stat *st)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/input/%c", q_spool_dir(s), q_b62[i]);
	if (stat(path, st) == 0)
		return 0;
	return errno == ENOENT ? 1 : -1;
}

/* Append the ids of input/<c>/ (those with an -H) to iv. */
static int scan_split(struct q_spool *s, int i, struct idvec *iv,
		      size_t *found_r, const char **error_r)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int ret = 0;

	*found_r = 0;
	snprintf(path, sizeof(path), "%s/input/%c", q_spool_dir(s), q_b62[i]);
	if ((d = opendir(path)) == NULL)
		return errno == ENOENT ? 0 :
			q_err(error_r, "opendir %s: %s", path, strerror(errno));
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		const char *n = de->d_name;
		char id[Q_ID_LEN + 1];

		if (n[0] == '.' || n[Q_ID_LEN] != '-' || n[Q_ID_LEN + 1] != 'H' ||
		    n[Q_ID_LEN + 2] != '\0' || strnlen(n, Q_ID_LEN) != Q_ID_LEN ||
		    n[Q_ID_SPLIT_POS] != q_b62[i])
			continue;
		memcpy(id, n, Q_ID_LEN);
		id[Q_ID_LEN] = '\0';
		if (!q_id_valid(id))
			continue;
		if (idvec_push(id, iv) < 0) {
			ret = q_err(error_r, "out of memory");
			break;
		}
		(*found_r)++;
		errno = 0;
	}
	if (ret == 0 && de == NULL && errno != 0)
		ret = q_err(error_r, "readdir %s: %s", path, strerror(errno));
	closedir(d);
	return ret;
}

static bool same_dir(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_dev == b->st_dev &&
		a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
		a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

int q_spool_list(struct q_spool *s, q_list_fn *fn, void *ctx,
		 const char **error_r)
{
	struct q_hints *h;
	struct idvec scan = { 0 };
	struct lctx ix = { 0 };
	struct fixes fx = { 0 };
	struct dstamp old[NSPLIT], neu[NSPLIT];
	struct q_buf scratch = { 0 };
	struct stat pre[NSPLIT], post;
	int pre_r[NSPLIT];
	bool trusted[NSPLIT], stamps_changed = false, complete = false;
	uint32_t icount[NSPLIT] = { 0 };
	char boot[64];
	time_t now = time(NULL);
	size_t i = 0, j = 0, hint_n = 0;
	int ret = 0;

	if (q_spool_hints(s, &h, error_r) < 0)
		return -1;
	if (q_boot_id(boot, sizeof(boot), NULL) < 0)
		boot[0] = '\0';
	if (boot[0] != '\0')
		stamps_load(s, boot, old);
	else
		memset(old, 0, sizeof(old));
	for (int k = 0; k < NSPLIT; k++)
		pre_r[k] = split_stat(s, k, &pre[k]);

	/* size the copy once (a hint: it grows if the count was low) */
	if (q_hints_count(h, Q_DB_INDEX, &hint_n, NULL) == 0 && hint_n > 0 &&
	    hint_n < SIZE_MAX / 256 &&
	    (ix.v = malloc((hint_n + 64) * sizeof(*ix.v))) != NULL) {
		ix.cap = hint_n + 64;
		(void)q_buf_reserve(&ix.vals, hint_n * 192);
	}
	if (q_hints_iter(h, Q_DB_INDEX, NULL, 0, collect_fn, &ix, error_r) < 0) {
		ret = ix.nomem ? q_err(error_r, "out of memory") :
			q_err(error_r, "%s", q_err_last());
		goto out;
	}
	for (size_t k = 0; k < ix.n; k++)
		icount[split_of(ix.v[k].id[Q_ID_SPLIT_POS])]++;

	/* trust the index where a stamp still holds; read the others */
	for (int k = 0; k < NSPLIT; k++) {
		size_t found;

		neu[k] = (struct dstamp){ 0 };
		trusted[k] = old[k].valid && pre_r[k] == 0 &&
			old[k].ino == (uint64_t)pre[k].st_ino &&
			old[k].sec == (int64_t)pre[k].st_ctim.tv_sec &&
			old[k].nsec == pre[k].st_ctim.tv_nsec &&
			old[k].count == icount[k];
		if (trusted[k]) {
			neu[k] = old[k];
			continue;
		}
		if (old[k].valid)
			stamps_changed = true;
		if (pre_r[k] != 0)
			continue;    /* no such directory: no messages */
		if (scan_split(s, k, &scan, &found, error_r) < 0) {
			ret = -1;
			goto out;
		}
		if (boot[0] != '\0' && pre[k].st_ctim.tv_sec + STAMP_MIN_AGE <= now &&
		    split_stat(s, k, &post) == 0 && same_dir(&pre[k], &post)) {
			neu[k] = (struct dstamp){ true, (uint64_t)pre[k].st_ino,
				(int64_t)pre[k].st_ctim.tv_sec,
				pre[k].st_ctim.tv_nsec, (uint32_t)found };
			stamps_changed = true;
		}
	}
	if (scan.n > 1)
		qsort(scan.v, scan.n, sizeof(*scan.v), cmp_id);

	while (i < ix.n || j < scan.n) {
		struct q_index_rec r;
		char id[Q_ID_LEN + 1];
		int c, e;

		if (i == ix.n)
			c = 1;
		else if (j == scan.n)
			c = -1;
		else
			c = memcmp(ix.v[i].id, scan.v[j], Q_ID_LEN);
		memcpy(id, c <= 0 ? ix.v[i].id : scan.v[j], Q_ID_LEN);
		id[Q_ID_LEN] = '\0';
		memset(&r, 0, sizeof(r));
		if (c < 0 && !trusted[split_of(id[Q_ID_SPLIT_POS])] &&
		    !h_exists(s, id)) {
			/* indexed, gone from the spool */
			if (idvec_push(id, &fx.del) < 0) {
				ret = q_err(error_r, "out of memory");
				goto out;
			}
			i++;
			continue;
		}
		if (c <= 0 && rec_decode_view(ix.vals.data + ix.v[i].off,
					      ix.v[i].len, id, &r, &scratch) == 0) {
			/* the fast path: strings point into scratch */
			i++;
			if (c == 0)
				j++;
			e = fn(&r, ctx);
			if (e != 0) {
				ret = e < 0 ? -1 : 0;
				break;
			}
			continue;
		}
		e = rec_repair(s, id, &r, &fx, error_r);
		if (c <= 0)
			i++;
		if (c >= 0)
			j++;
		if (e == Q_NOTFOUND)
			continue;
		if (e < 0) {
			ret = -1;
			goto out;
		}
		e = fn(&r, ctx);
		q_index_rec_clear(&r);
		if (e != 0) {
			ret = e < 0 ? -1 : 0;
			break;
		}
	}
	complete = i == ix.n && j == scan.n;
out:
	/* remaining bad keys: dropped */
	for (size_t o = 0; o + sizeof(uint32_t) <= ix.badkeys.len;) {
		uint32_t l;
		memcpy(&l, ix.badkeys.data + o, sizeof(l));
		o += sizeof(l);
		(void)q_hints_del(h, Q_DB_INDEX, ix.badkeys.data + o, l, NULL);
		o += l;
	}
	if (ret < 0) {
		/* keep the caller's error text through the repairs */
		char keep[1024];
		snprintf(keep, sizeof(keep), "%s", q_err_last());
		fixes_apply(h, &fx);
		q_err(error_r, "%s", keep);
	} else if (fixes_apply(h, &fx) && complete && stamps_changed) {
		/* only a complete, fully repaired walk may vouch for the
		 * index: a partial one could leave it wrong by as many
		 * missing entries as stale ones */
		stamps_save(s, boot, neu);
	}
	free(scan.v);
	free(ix.v);
	q_buf_free(&ix.vals);
	q_buf_free(&ix.badkeys);
	q_buf_free(&scratch);
	return ret;
}

int q_spool_list_files(struct q_spool *s, q_list_fn *fn, void *ctx,
		       const char **error_r)
{
	struct idvec scan = { 0 };
	int ret = 0;

	if (scan_sorted(s, &scan, error_r) < 0) {
		free(scan.v);
		return -1;
	}
	for (size_t j = 0; j < scan.n; j++) {
		struct q_index_rec r;
		int e = rec_from_scan(s, &scan, j, &r, error_r);

		if (e == Q_NOTFOUND)
			continue;    /* removed since the scan, or corrupt */
		if (e < 0) {
			ret = -1;
			break;
		}
		e = fn(&r, ctx);
		q_index_rec_clear(&r);
		if (e != 0) {
			ret = e < 0 ? -1 : 0;
			break;
		}
	}
	free(scan.v);
	return ret;
}

int q_spool_count(struct q_spool *s, size_t *count_r, const char **error_r)
{
	struct q_hints *h;

	*count_r = 0;
	if (q_spool_hints(s, &h, error_r) < 0)
		return -1;
	return q_hints_count(h, Q_DB_INDEX, count_r, error_r);
}

/* ------------------------------------------------------------------ */
/* rebuild */

static bool old_enough(int dirfd, const char *name, time_t now)
{
	struct stat st;

	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		S_ISREG(st.st_mode) && st.st_mtime + LEFTOVER_AGE < now;
}

/* Remove leftovers of crashes older than a day: files under tmp/, and
 * -D/-J files in input/<c>/ without their -H. Best effort. */
static void remove_leftovers(struct q_spool *s)
{
	char path[PATH_MAX];
	time_t now = time(NULL);
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/tmp", q_spool_dir(s));
	if ((d = opendir(path)) != NULL) {
		while ((de = readdir(d)) != NULL)
			if (de->d_name[0] != '.' &&
			    old_enough(dirfd(d), de->d_name, now))
				(void)unlinkat(dirfd(d), de->d_name, 0);
		closedir(d);
	}
	for (int i = 0; i < 62; i++) {
		snprintf(path, sizeof(path), "%s/input/%c", q_spool_dir(s),
			 q_b62[i]);
		if ((d = opendir(path)) == NULL)
			continue;
		while ((de = readdir(d)) != NULL) {
			char hname[Q_ID_LEN + 3];
			const char *n = de->d_name;

			if (strlen(n) != Q_ID_LEN + 2 || n[Q_ID_LEN] != '-' ||
			    (n[Q_ID_LEN + 1] != 'D' && n[Q_ID_LEN + 1] != 'J'))
				continue;
			memcpy(hname, n, Q_ID_LEN + 2);
			hname[Q_ID_LEN + 1] = 'H';
			hname[Q_ID_LEN + 2] = '\0';
			if (faccessat(dirfd(d), hname, F_OK, AT_SYMLINK_NOFOLLOW) < 0 &&
			    errno == ENOENT && old_enough(dirfd(d), n, now))
				(void)unlinkat(dirfd(d), n, 0);
		}
		closedir(d);
	}
}

int q_index_rebuild(struct q_spool *s, size_t *count_r, const char **error_r)
{
	struct q_hints *h;
	struct idvec scan = { 0 };
	size_t n = 0;
	int ret = 0;

	*count_r = 0;
	if (q_spool_hints(s, &h, error_r) < 0)
		return -1;
	stamps_drop(s);
	if (q_hints_truncate(h, Q_DB_INDEX, error_r) < 0)
		return -1;
	if (scan_sorted(s, &scan, error_r) < 0) {
		free(scan.v);
		return -1;
	}
	for (size_t i = 0; i < scan.n; i++) {
		struct q_index_rec r;
		int e = rec_from_scan(s, &scan, i, &r, error_r);

		if (e == Q_NOTFOUND)
			continue;
		if (e == 0)
			e = put_unless_valid(h, &r, error_r);
		q_index_rec_clear(&r);
		if (e < 0) {
			ret = -1;
			break;
		}
		n++;
	}
	free(scan.v);
	if (ret == 0)
		remove_leftovers(s);
	*count_r = n;
	return ret;
}
