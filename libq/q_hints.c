/*
 * q_hints.c - the hints databases: one Berkeley DB transactional data
 * store under <spool>/db, shared by the threads of a process and by
 * concurrent processes; the generic operations on its btrees, the wait
 * lists, and the record codec (q_rec_*).  The only file of qkit that
 * includes db.h.
 *
 * Environment.  DB_INIT_TXN|LOCK|LOG|MPOOL, DB_THREAD, DB_REGISTER and
 * DB_RECOVER; a 32 MB cache; btrees of 16 KB pages with
 * record numbers (exact O(1) counts) except the wait lists (sorted
 * duplicates).  Commits do not fsync (DB_TXN_WRITE_NOSYNC: a process
 * crash loses nothing, a system crash may lose the last hints, which can
 * be rebuilt); logs (1 MB files) are removed automatically once a
 * checkpoint covers them (every 128 writes if 1 MB of log accumulated,
 * and when a writer closes if 256 KB did).  Every database file carries
 * page checksums (DB_CHKSUM): a garbage page is reported, never followed.
 * Berkeley DB's own messages go to a per-thread buffer that is appended
 * to our error texts; nothing is printed.
 *
 * One DB_ENV per directory per process.  DB_REGISTER allows a process a
 * single environment handle, so the environments live in a process-wide
 * table keyed by (real path, pid); q_hints_open on a directory that is
 * already open shares its DB_ENV (reference count) and its DB handles.
 * A forked child never touches its parent's handles: it opens its own.
 *
 * Region files.  Berkeley DB trusts its region files (__db.00N) like
 * memory: garbage in them makes it crash or spin.  Two flock(2) locks:
 *   open lock: LOCK_EX on the directory itself while a process opens,
 *     recovers or moves the environment aside (openers are serialised;
 *     a wait is bounded to 60 s);
 *   use lock: LOCK_SH on <dir>/qkit.lock while a process has the
 *     environment open.
 * An opener that can take the use lock exclusively is alone.  It joins
 * the regions left on disk only when the regions stamp (qkit.regions,
 * see stamp_write) proves that every file of the environment is exactly
 * as the last clean user left it, in this boot; otherwise it deletes the
 * region files and Berkeley DB makes new ones (and its register decides
 * whether recovery is needed: a process died holding the environment).
 * Openers that are not alone join the live regions.
 *
 * Invariants.
 *  - Every Berkeley DB call on an environment runs under its rwlock in
 *    read mode; reopen, truncate and close take it in write mode.  No
 *    lock of ours or of Berkeley DB is held while a q_hints_iter
 *    callback runs (a chunk is copied with a bulk read, the cursor
 *    closed, then the callback called), so callbacks may write.
 *  - Deadlocks abort and retry (at most 100 times, short random backoff).
 *    A lock wait lasts at most 2 s (DB_TIME_NOTGRANTED) and an operation
 *    waits at most 15 times: a process stopped with a lock held makes
 *    others fail with a text, never hang.
 *  - Killed processes: before every operation __db.register is checked
 *    for a process that died with the environment open (one pread, one
 *    fcntl(F_GETLK) per other process); if there is one we reopen first,
 *    which recovers (DB_REGISTER) before Berkeley DB can block on a lock
 *    or a mutex the dead process held, and makes the others reopen too.
 *    A watchdog thread per environment expires lock waits (Berkeley DB
 *    checks timeouts only when its detector runs), so a wait on a
 *    process that dies (or stops) meanwhile ends too.
 *  - DB_RUNRECOVERY during an operation (another process ran recovery,
 *    or a page failed its checksum) closes and reopens the environment
 *    and retries; an update whose commit itself failed is not retried
 *    (it may have been applied).  The same failure right after the reopen
 *    (and not caused by another process's recovery) is damage: the
 *    directory is moved aside as below and the operation fails with a
 *    text saying so.  EINVAL counts too (a damaged log shows as "LSN
 *    past end of log" when a page is written).
 *  - Corruption at open: when the environment cannot be opened even with
 *    recovery (twice DB_RUNRECOVERY), or a database file fails to open
 *    (EINVAL "not a database", checksum, DB_VERIFY_BAD, DB_PAGE_NOTFOUND,
 *    old or foreign version), the directory is renamed to
 *    <dir>.corrupt-<unix time>[-N] and created afresh; q_hints_open says
 *    so through *notice_r.  At most one move per open.  A move found by
 *    an operation is also written to the main log here (q_log), since
 *    callers may ignore the operation's error; every move is passed to
 *    the q_hints_set_notice_fn hook (default: stderr if a terminal).
 *  - Recovery whenever the last user did not leave cleanly (no valid
 *    stamp, see below), not only when __db.register names a dead process:
 *    Berkeley DB empties the register's dead slots before it recovers, so
 *    a recovery that failed (ENOSPC) would otherwise be skipped next time
 *    and the commits in the log lost.
 *  - A full disk is an error, never damage: ENOSPC/EDQUOT (in Berkeley
 *    DB's code or its messages) at open or recovery fails with a text
 *    naming the directory and "No space left on device"; nothing is moved
 *    aside, and neither is damage while less than Q_HINTS_ROOM_FRESH is
 *    free (a fresh environment would not fit).  The main log says so at
 *    most once a minute.  Regions never SIGBUS on a full disk: see
 *    "room for the regions" (DB_REGION_INIT and reserved blocks).
 *
 * Weak spots (honest list).
 *  - Other processes that still have the moved-aside environment open
 *    keep using it until they reopen (a panic, or their next start).
 *  - Berkeley DB tools (db_stat, db_dump) run by hand do not take the
 *    use lock; an opener may then think it is alone and throw away the
 *    regions under them.  A forked child that keeps an inherited use-lock
 *    descriptor makes openers think the environment is in use (they then
 *    join its regions without checking the stamp).
 *  - A process killed inside a Berkeley DB mutex leaves it held (5.3's
 *    mutexes are not robust): the check above catches that before the
 *    next operation, but a thread already waiting for that very mutex
 *    when its holder dies stays blocked (a window of microseconds).
 *    failchk would not help: its thread table adds such a mutex to every
 *    call.
 *  - q_hints_count is O(1) for btrees with record numbers (every database
 *    but wait) and O(pairs) for wait (a bulk walk, ~0.3 ms per 25,000).
 *  - q_hints_iter sees a key added or deleted by others during the walk
 *    or not, depending on whether the walk had passed it.
 *  - After a panic Berkeley DB cannot close its DB handles; they are kept
 *    (see grave_keep), a few dozen KB per panic.
 *  - The regions' reserve costs up to 4 MB of disk per region file (three
 *    today) and an fstat per region file per operation; an operation that
 *    grows the cache by more than 3 MB at once on a full disk can still
 *    meet SIGBUS (see "room for the regions").  The free-space test before
 *    a move aside is statvfs's, blind to quotas.
 */
#include "config.h"
#include "q_private.h"
#include "q/hints.h"
#include "q/addr.h"
#include "q/log.h"

#include <db.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define Q_HINTS_TRIES      100          /* deadlock retries per operation */
#define Q_HINTS_LOCK_WAIT  2000         /* ms: one lock wait at most ... */
#define Q_HINTS_TIMEOUTS   15           /* ... this many times per operation */
#define Q_HINTS_OPEN_WAIT  60           /* s: wait for another opener */
#define Q_HINTS_WATCH_MS   500          /* watchdog period at most */
#define Q_HINTS_REOPENS    3            /* reopens per operation */
#define Q_HINTS_CACHE      (32u << 20)  /* mpool cache: a 100k-message index
					   is ~25 MB; walks that fit are
					   3-5 times faster */
#define Q_HINTS_PAGE       16384        /* btree pages: 4 KB pages cost one
					   write fault on the file-backed
					   region per page touched; 16 KB
					   halve a cold walk */
#define Q_HINTS_LOG_MAX    (1u << 20)   /* log file size */
#define Q_HINTS_CKP_EVERY  128          /* writes between checkpoint checks */
#define Q_HINTS_CKP_KB     1024         /* ... checkpoint when this much log */
#define Q_HINTS_CLOSE_CKP_KB 256        /* at close of a writer */
#define Q_HINTS_BULK       (256u << 10) /* first bulk buffer of a walk */
#define Q_HINTS_LOCKS      20000        /* lock table: truncate of big dbs */
#define Q_HINTS_RESERVE    (4u << 20)   /* blocks kept allocated past the end
					   of each region file (it grows in
					   1 MB steps, sparse) ... */
#define Q_HINTS_RESERVE_LOW (3u << 20)  /* ... topped up when fewer remain */
#define Q_HINTS_REGIONS    8            /* region files followed at most */
#define Q_HINTS_ROOM_FRESH (20u << 20)  /* free space a fresh environment
					   needs (regions, reserves, a log):
					   with less, damage is not moved
					   aside (it would not help) */
#define Q_TRANSPORT_MAX    32
#define Q_REC_STR_MAX      (1u << 20)   /* longest string in a record */

/* Internal codes next to Berkeley DB's (which are in -30999..-30800). */
#define HINTS_NOT_OPEN     (-40001)
#define HINTS_ENOMEM       (-40002)
#define HINTS_ABORTED      (-40003)     /* an update callback returned -1 */
#define HINTS_FULL         (-40004)     /* no room to reserve for the regions */

static const char use_lock_name[] = "qkit.lock";

/* Lock wait bounds; tests shorten them (q_hints_tune, not public). */
static unsigned lock_wait_ms = Q_HINTS_LOCK_WAIT;
static unsigned lock_timeouts = Q_HINTS_TIMEOUTS;

void q_hints_tune(unsigned wait_ms, unsigned timeouts);
void q_hints_tune(unsigned wait_ms, unsigned timeouts)
{
	lock_wait_ms = wait_ms;
	lock_timeouts = timeouts;
}

/* q_hints_open's notice (per thread, until the next open). */
static _Thread_local char notice_buf[1200];

/* Where moves aside are told besides the main log (q_hints_set_notice_fn);
 * NULL: stderr when it is a terminal. */
static _Atomic(q_hints_notice_fn *) notice_fn;

void q_hints_set_notice_fn(q_hints_notice_fn *fn)
{
	atomic_store(&notice_fn, fn);
}

static void notice_tell(const char *text)
{
	q_hints_notice_fn *fn = atomic_load(&notice_fn);

	if (fn != NULL) {
		fn(text);
	} else if (isatty(STDERR_FILENO)) {
		/* one write, so that lines of threads do not mix */
		struct q_buf b = { 0 };

		if (q_buf_printf(&b, "%s: warning: hints: ",
				 program_invocation_short_name) == 0 &&
		    q_escape_term(&b, text, strlen(text), true) == 0 &&
		    q_buf_addc(&b, '\n') == 0 &&
		    write(STDERR_FILENO, b.data, b.len) < 0)
			b.len = 0;
		q_buf_free(&b);
	}
}

/* ------------------------------------------------------------------ */
/* Berkeley DB's messages: kept per thread, appended to our texts */

static _Thread_local char db_msg[512];

static void db_msg_clear(void)
{
	db_msg[0] = '\0';
}

static void db_msg_add(const char *msg)
{
	size_t have = strlen(db_msg), n;

	if (msg == NULL || have + 8 >= sizeof(db_msg))
		return;
	/* Berkeley DB repeats itself (once per page): say it once. */
	n = strlen(msg);
	if (have >= n && strcmp(db_msg + have - n, msg) == 0)
		return;
	snprintf(db_msg + have, sizeof(db_msg) - have, "%s%s",
		 have > 0 ? "; " : "", msg);
}

static void env_errcall(const DB_ENV *env, const char *pfx, const char *msg)
{
	(void)env;
	(void)pfx;
	db_msg_add(msg);
}

static void env_msgcall(const DB_ENV *env, const char *msg)
{
	(void)env;
	db_msg_add(msg);
}

/* Append up to 80 bytes of key to b, escaped. */
static void key_show(char *buf, size_t size, const void *key, size_t klen)
{
	const unsigned char *k = key;
	size_t i, o = 0;

	if (size == 0)
		return;
	for (i = 0; i < klen && o + 6 < size; i++) {
		if (i == 80) {
			o += (size_t)snprintf(buf + o, size - o, "...");
			break;
		}
		if (k[i] >= 0x20 && k[i] < 0x7f && k[i] != '\\')
			buf[o++] = (char)k[i];
		else
			o += (size_t)snprintf(buf + o, size - o, "\\x%02x", k[i]);
	}
	buf[o < size ? o : size - 1] = '\0';
}

static const char *rc_text(int rc)
{
	switch (rc) {
	case HINTS_NOT_OPEN:
		return "the hints environment is not open (an earlier reopen failed)";
	case HINTS_ENOMEM:
		return strerror(ENOMEM);
	case HINTS_ABORTED:
		return "aborted by the caller";
	case HINTS_FULL:
		return strerror(ENOSPC);
	default:
		return db_strerror(rc);
	}
}

/* The one mapping of Berkeley DB results: 0, Q_NOTFOUND, or -1 with a
 * text naming the database, the operation, the key and the cause. */
static int db_result(int rc, const char *dbname, const char *what,
		     const void *key, size_t klen, const char **error_r)
{
	char ks[300];

	switch (rc) {
	case 0:
		return 0;
	case DB_NOTFOUND:
	case DB_KEYEMPTY:
		return Q_NOTFOUND;
	default:
		break;
	}
	if (key != NULL)
		key_show(ks, sizeof(ks), key, klen);
	return q_err(error_r, "hints %s: %s%s%s%s: %s%s%s%s",
		     dbname, what, key != NULL ? " \"" : "",
		     key != NULL ? ks : "", key != NULL ? "\"" : "",
		     rc_text(rc), db_msg[0] != '\0' ? " (" : "", db_msg,
		     db_msg[0] != '\0' ? ")" : "");
}

static bool rc_retry(int rc)
{
	return rc == DB_LOCK_DEADLOCK || rc == DB_LOCK_NOTGRANTED;
}

/* Results that mean a damaged file or environment. */
static bool rc_corrupt(int rc)
{
	switch (rc) {
	case DB_RUNRECOVERY:
	case DB_VERIFY_BAD:
	case DB_PAGE_NOTFOUND:
	case DB_CHKSUM_FAIL:
	case DB_VERSION_MISMATCH:
	case DB_OLD_VERSION:
	case DB_SECONDARY_BAD:
	case EINVAL:
		return true;
	default:
		return false;
	}
}

static void backoff(unsigned attempt)
{
	static _Thread_local unsigned seed;
	struct timespec ts;
	unsigned us;

	if (seed == 0)
		seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL) ^
		       (unsigned)(uintptr_t)&ts;
	seed = seed * 1103515245u + 12345u;
	us = 50u * (attempt < 40 ? attempt : 40) + (seed >> 16) % 200u;
	ts.tv_sec = 0;
	ts.tv_nsec = (long)us * 1000L;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ------------------------------------------------------------------ */
/* environments, one per (directory, process) */

struct hdb {
	struct hdb *next;
	char name[16 + Q_TRANSPORT_MAX];   /* "retry", "wait-smtp", ... */
	bool dup;                          /* sorted duplicates (wait) */
	DB *db;                            /* NULL while not open */
	atomic_bool wrote;                 /* this process wrote to it */
};

enum { PANIC_NONE, PANIC_REGISTER, PANIC_REAL };

struct henv {
	struct henv *next;
	char *dir;                         /* real path */
	pid_t pid;
	unsigned refs;
	pthread_rwlock_t lock;
	DB_ENV *env;                       /* NULL while not open */
	int use_fd;                        /* LOCK_SH on qkit.lock, or -1 */
	unsigned gen;                      /* bumped by every reopen */
	struct hdb *dbs;
	atomic_uint writes;
	atomic_int panic;                  /* what the last panic event said */
	pthread_mutex_t reg_lock;
	int reg_fd;                        /* __db.register, see peer_died */
	int nrfd;                          /* region files, see regions_reserve */
	int rfd[Q_HINTS_REGIONS];
	atomic_llong rend[Q_HINTS_REGIONS]; /* blocks reserved up to here */
	bool rsv_off;                      /* the file system cannot fallocate */
	int rsv_err;                       /* errno of the last reserve at open */
	pthread_t watch;                   /* the watchdog thread */
	bool watch_on, watch_stop, watch_lost;
	pthread_mutex_t watch_mx;
	pthread_cond_t watch_cv;
};

struct q_hints {
	struct henv *e;
	struct hdb *db[Q_DB__COUNT];
	char transport[Q_TRANSPORT_MAX + 1];
};

static pthread_mutex_t envs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct henv *envs;

static const char *const db_base[Q_DB__COUNT] = {
	[Q_DB_INDEX] = "index",
	[Q_DB_RETRY] = "retry",
	[Q_DB_WAIT] = "wait",
	[Q_DB_SERIALIZE] = "serialize",
	[Q_DB_SESSIONS] = "sessions",
};

static void env_event(DB_ENV *dbenv, u_int32_t event, void *info)
{
	struct henv *e = dbenv->app_private;

	(void)info;
	if (e == NULL)
		return;
	if (event == DB_EVENT_REG_PANIC)
		atomic_store(&e->panic, PANIC_REGISTER);
	else if (event == DB_EVENT_PANIC &&
		 atomic_load(&e->panic) != PANIC_REGISTER)
		atomic_store(&e->panic, PANIC_REAL);
}

static int open_one_db(struct henv *e, struct hdb *d)
{
	char file[sizeof(d->name) + 4];
	DB *db;
	int rc;

	snprintf(file, sizeof(file), "%s.db", d->name);
	if ((rc = db_create(&db, e->env, 0)) != 0)
		return rc;
	rc = db->set_flags(db, DB_CHKSUM | (d->dup ? DB_DUP | DB_DUPSORT
						     : DB_RECNUM));
	if (rc == 0)    /* only used when the file is created */
		rc = db->set_pagesize(db, Q_HINTS_PAGE);
	if (rc == 0)
		rc = db->open(db, NULL, file, NULL, DB_BTREE,
			      DB_CREATE | DB_AUTO_COMMIT | DB_THREAD, 0600);
	if (rc != 0) {
		(void)db->close(db, DB_NOSYNC);
		return rc;
	}
	d->db = db;
	return 0;
}

/* After a panic Berkeley DB refuses to close a DB handle (DB->close
 * returns DB_RUNRECOVERY before freeing anything), and touching the
 * panicked regions to force it would risk writing stale pages. Such
 * handles are kept here, reachable, for the life of the process: a few
 * dozen KB per panic, and panics are rare (a process dying with the
 * environment open, a damaged page). Beyond 4096 they are dropped. */
static pthread_mutex_t grave_lock = PTHREAD_MUTEX_INITIALIZER;
static DB **grave;
static size_t grave_n, grave_cap;

static void grave_keep(DB *db)
{
	pthread_mutex_lock(&grave_lock);
	if (grave_n == grave_cap && grave_cap < 4096) {
		size_t ncap = grave_cap ? grave_cap * 2 : 32;
		DB **nv = realloc(grave, ncap * sizeof(*nv));

		if (nv != NULL) {
			grave = nv;
			grave_cap = ncap;
		}
	}
	if (grave_n < grave_cap)
		grave[grave_n++] = db;
	pthread_mutex_unlock(&grave_lock);
}

static int open_lock(const char *dir, const char **error_r);
static void stamp_write(const char *dir);
static bool watchdog_stop(struct henv *e);

/* Close the databases and the environment (all errors ignored: this also
 * runs on a panicked environment). final: the process is done with the
 * directory (checkpoint if it wrote; stamp the regions if it was last). */
static void env_stop(struct henv *e, bool final)
{
	struct hdb *d;
	bool wrote = false, clean = e->env != NULL;

	watchdog_stop(e);
	if (atomic_load(&e->panic) != PANIC_NONE)
		clean = false;
	for (d = e->dbs; d != NULL; d = d->next)
		if (d->db != NULL && atomic_load(&d->wrote))
			wrote = true;
	if (e->env != NULL && final && wrote && clean)
		(void)e->env->txn_checkpoint(e->env, Q_HINTS_CLOSE_CKP_KB, 0, 0);
	for (d = e->dbs; d != NULL; d = d->next) {
		if (d->db != NULL) {
			int rc = d->db->close(d->db, atomic_load(&d->wrote)
						     ? 0 : DB_NOSYNC);

			if (rc == DB_RUNRECOVERY)
				grave_keep(d->db);
			if (rc != 0)
				clean = false;
		}
		d->db = NULL;
		atomic_store(&d->wrote, false);
	}
	if (e->env != NULL && e->env->close(e->env, 0) != 0)
		clean = false;
	e->env = NULL;
	if (e->reg_fd >= 0)
		close(e->reg_fd);
	e->reg_fd = -1;
	while (e->nrfd > 0)
		close(e->rfd[--e->nrfd]);
	if (final && clean && e->use_fd >= 0) {
		char path[PATH_MAX];
		struct stat a, b;
		int lfd = open_lock(e->dir, NULL);

		/* Last one out (and still the same lock file): stamp. */
		snprintf(path, sizeof(path), "%s/%s", e->dir, use_lock_name);
		if (lfd >= 0 && fstat(e->use_fd, &a) == 0 &&
		    stat(path, &b) == 0 && a.st_dev == b.st_dev &&
		    a.st_ino == b.st_ino &&
		    flock(e->use_fd, LOCK_EX | LOCK_NB) == 0)
			stamp_write(e->dir);
		if (lfd >= 0)
			close(lfd);
	}
	if (e->use_fd >= 0)
		close(e->use_fd);
	e->use_fd = -1;
}

#define F_REGION 1      /* __db.NNN */
#define F_LOG    2      /* log.NNNNNNNNNN */
#define F_DATA   4      /* <name>.db */

static int file_kind(const char *n)
{
	size_t len = strlen(n);

	if (strncmp(n, "__db.", 5) == 0 && len > 5 &&
	    strspn(n + 5, "0123456789") == len - 5)
		return F_REGION;
	if (strncmp(n, "log.", 4) == 0 && len > 4 &&
	    strspn(n + 4, "0123456789") == len - 4)
		return F_LOG;
	if (len > 3 && n[0] != '.' && strcmp(n + len - 3, ".db") == 0)
		return F_DATA;
	return 0;
}

/* Call fn for each file of dir of one of the kinds. */
static int each_file(const char *dir, int kinds,
		     int (*fn)(const char *path, const char *name, void *ctx),
		     void *ctx, const char **error_r)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int fd, ret = 0;

	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (d = fdopendir(fd)) == NULL) {
		int err = errno;

		if (fd >= 0)
			close(fd);
		return q_err(error_r, "open %s: %s", dir, strerror(err));
	}
	while (ret == 0 && (de = readdir(d)) != NULL) {
		const char *n = de->d_name;

		if ((file_kind(n) & kinds) == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, n);
		ret = fn(path, n, ctx);
	}
	closedir(d);
	if (ret < 0 && error_r != NULL)
		*error_r = q_err_last();
	return ret;
}

static int unlink_one(const char *path, const char *name, void *ctx)
{
	(void)name;
	(void)ctx;
	if (unlink(path) < 0 && errno != ENOENT)
		return q_err(NULL, "unlink %s: %s", path, strerror(errno));
	return 0;
}

/* ---- room for the regions ----
 * Berkeley DB's region files are mmap'd and sparse: created with their
 * last byte only, and grown (the cache region, up to the cache size and
 * more) in 1 MB steps the same way. On a full file system the first
 * touch of a page that has no block kills the process with SIGBUS; no
 * error is ever returned. So: DB_REGION_INIT makes Berkeley DB write
 * every page of a region it creates (ENOSPC then fails the open), and
 * here blocks are reserved past the end of every region file with
 * fallocate(FALLOC_FL_KEEP_SIZE): Q_HINTS_RESERVE at open (filling any
 * hole below the end too), topped up before every operation when fewer
 * than Q_HINTS_RESERVE_LOW remain, so a growth step always lands on
 * reserved blocks. When a top-up fails (ENOSPC, EDQUOT) the operation
 * fails with that error before Berkeley DB runs. Costs an fstat per
 * region file per operation and up to Q_HINTS_RESERVE of disk per region
 * file. Weak: an operation that brings more than Q_HINTS_RESERVE_LOW of
 * new pages into the cache at once (a batch or a truncate over thousands
 * of pages never cached before) can still outgrow the reserve while the
 * disk is full. File systems without fallocate (EOPNOTSUPP) are left as
 * they were. */

static int region_open_one(const char *path, const char *name, void *vctx)
{
	struct henv *e = vctx;
	int fd;

	(void)name;
	if (e->nrfd >= Q_HINTS_REGIONS)
		return 0;
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return q_err(NULL, "open %s: %s", path, strerror(errno));
	atomic_store(&e->rend[e->nrfd], 0);
	e->rfd[e->nrfd++] = fd;
	return 0;
}

static bool errno_full(int err)
{
	return err == ENOSPC || err == EDQUOT;
}

static void full_say(const char *dir, const char *text);

/* Reserve the blocks (see above); all: at open, every file, holes too.
 * 0, or -1 with a text (the errno in *err_r). Caller holds e->lock. */
static int regions_reserve(struct henv *e, bool all, int *err_r,
			   const char **error_r)
{
	int i;

	*err_r = 0;
	if (e->rsv_off)
		return 0;
	for (i = 0; i < e->nrfd; i++) {
		struct stat st;
		long long have;
		off_t off;
		int r;

		if (fstat(e->rfd[i], &st) < 0)
			continue;
		if (!all && (long long)st.st_size + Q_HINTS_RESERVE_LOW <=
			    atomic_load(&e->rend[i]))
			continue;
		/* below the end only when blocks are missing there */
		have = (long long)st.st_blocks * 512;
		off = all && have < (long long)st.st_size ? 0 : st.st_size;
		while ((r = fallocate(e->rfd[i], FALLOC_FL_KEEP_SIZE, off,
				      st.st_size - off + Q_HINTS_RESERVE)) < 0 &&
		       errno == EINTR)
			;
		if (r < 0) {
			int err = errno;

			if (err == EOPNOTSUPP || err == ENOSYS) {
				e->rsv_off = true;
				return 0;
			}
			/* full, but what is reserved still covers a step
			 * (blocks counted past the end too; holes would make
			 * this optimistic, and there are none once reserved) */
			if (errno_full(err) &&
			    have >= (long long)st.st_size + Q_HINTS_RESERVE_LOW) {
				atomic_store(&e->rend[i], have);
				continue;
			}
			*err_r = err;
			q_err(error_r, "hints %s: cannot reserve %u MB for the "
			      "shared regions to grow%s: %s", e->dir,
			      Q_HINTS_RESERVE >> 20,
			      errno_full(err) ? " (disk full: try again when "
			      "there is room)" : "", strerror(err));
			if (errno_full(err))
				full_say(e->dir, q_err_last());
			return -1;
		}
		atomic_store(&e->rend[i], (long long)st.st_size + Q_HINTS_RESERVE);
	}
	return 0;
}

/* Did Berkeley DB fail because the disk (or a quota) is full? Its own
 * code is often a panic that hides the cause; the cause is in its text. */
static bool rc_full(int rc)
{
	return errno_full(rc) || rc == HINTS_FULL ||
	       strstr(db_msg, "No space left on device") != NULL ||
	       strstr(db_msg, "Disk quota exceeded") != NULL;
}

/* Is there room for a fresh environment, so that moving a damaged one
 * aside can help? (Moving frees nothing.) If not, says so in why. */
static bool room_for_fresh(const char *dir, char *why, size_t size)
{
	struct statvfs sv;
	unsigned long long avail;

	if (statvfs(dir, &sv) < 0)
		return true;
	avail = (unsigned long long)sv.f_bavail * sv.f_frsize;
	if (avail >= Q_HINTS_ROOM_FRESH)
		return true;
	snprintf(why, size, "%s (%llu KB free; a fresh environment needs "
		 "%u MB)", strerror(ENOSPC), avail >> 10, Q_HINTS_ROOM_FRESH >> 20);
	return false;
}

/* After a failed open on a full disk: when nobody else has the
 * environment, give back the space of the regions it half made (the next
 * opener makes them anew and recovers in any case). Caller holds the
 * open lock. */
static void regions_drop_if_alone(const char *dir)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, use_lock_name);
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return;
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		(void)each_file(dir, F_REGION, unlink_one, NULL, NULL);
	close(fd);
}

/* Say in the main log that the hints meet a full disk: at most once a
 * minute per process (index updates that ignore errors would repeat it). */
static void full_say(const char *dir, const char *text)
{
	static atomic_llong said;
	long long now = (long long)time(NULL), then = atomic_load(&said);

	if (now - then < 60 ||
	    !atomic_compare_exchange_strong(&said, &then, now))
		return;
	q_log("hints: %s: disk full, hints not updated until there is room "
	      "(nothing is moved aside): %s", dir, text);
}

/* The regions stamp.  The last process to leave an environment cleanly
 * sets the mtime of every file of it (regions, logs, databases) to a
 * random instant in 1970-1973 and records (name, inode, size, mtime) with
 * the boot id in qkit.regions.  Any later write to such a file sets its
 * mtime to "now", so an opener that finds every file exactly as stamped,
 * in the same boot, knows the regions are what Berkeley DB left and may
 * join them (warm cache, no log scan).  Anything else (no stamp, a crash,
 * another boot, a changed, missing or extra file) and the regions are
 * thrown away.  The stamp is removed by the opener before it opens. */
static const char stamp_name[] = "qkit.regions";

static int real_boot_id(char *buf, size_t size)
{
	ssize_t n;
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	return buf[0] != '\0' ? 0 : -1;
}

struct stamp {
	struct q_buf b;
	uint64_t rnd;
	int files;
};

static int stamp_one(const char *path, const char *name, void *vctx)
{
	struct stamp *st = vctx;
	struct timespec ts[2];
	struct stat sb;

	st->rnd = st->rnd * 6364136223846793005ull + 1442695040888963407ull;
	ts[0].tv_sec = 0;
	ts[0].tv_nsec = UTIME_OMIT;
	ts[1].tv_sec = 1 + (time_t)((st->rnd >> 20) % 100000000u);
	ts[1].tv_nsec = (long)((st->rnd >> 8) % 1000000000u);
	if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0 ||
	    lstat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
		return -1;
	st->files++;
	return q_buf_printf(&st->b, "%s %llu %lld %lld %ld\n", name,
			    (unsigned long long)sb.st_ino,
			    (long long)sb.st_size, (long long)sb.st_mtim.tv_sec,
			    (long)sb.st_mtim.tv_nsec) < 0 ? -1 : 0;
}

static void stamp_write(const char *dir)
{
	struct stamp st = { .rnd = (uint64_t)time(NULL) ^
				   ((uint64_t)getpid() << 32) };
	char boot[64], path[PATH_MAX], tmp[PATH_MAX];
	struct timespec now;
	int fd;

	clock_gettime(CLOCK_MONOTONIC, &now);
	st.rnd ^= (uint64_t)now.tv_nsec * 0x9E3779B97F4A7C15ull;
	if (real_boot_id(boot, sizeof(boot)) < 0 ||
	    q_buf_printf(&st.b, "qkit-regions 3 %s\n", boot) < 0 ||
	    each_file(dir, F_REGION | F_LOG | F_DATA, stamp_one, &st, NULL) != 0 ||
	    st.files == 0)
		goto out;
	snprintf(path, sizeof(path), "%s/%s", dir, stamp_name);
	snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, stamp_name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0)
		goto out;
	if (write(fd, st.b.data, st.b.len) != (ssize_t)st.b.len) {
		close(fd);
		unlink(tmp);
		goto out;
	}
	close(fd);
	if (rename(tmp, path) < 0)
		unlink(tmp);
out:
	q_buf_free(&st.b);
}

struct check {
	const char *text;      /* the stamp's lines after the header */
	int files;
	bool ok;
};

static int check_one(const char *path, const char *name, void *vctx)
{
	struct check *c = vctx;
	char want[300];
	const char *p;
	struct stat sb;
	size_t n;

	c->files++;
	if (lstat(path, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		c->ok = false;
		return 1;
	}
	n = (size_t)snprintf(want, sizeof(want), "%s %llu %lld %lld %ld\n",
			     name, (unsigned long long)sb.st_ino,
			     (long long)sb.st_size,
			     (long long)sb.st_mtim.tv_sec,
			     (long)sb.st_mtim.tv_nsec);
	for (p = c->text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p)
		if (strncmp(p, want, n) == 0)
			return 0;
	c->ok = false;
	return 1;
}

/* Is the stamp there and does it match? Removes it in any case. */
static bool stamp_check(const char *dir)
{
	char path[PATH_MAX], buf[4096], boot[64], head[128];
	struct check c = { .ok = true };
	const char *p;
	ssize_t n;
	int fd, lines = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, stamp_name);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	unlink(path);
	if (n <= 0 || n >= (ssize_t)sizeof(buf) - 1)
		return false;
	buf[n] = '\0';
	if (memchr(buf, '\0', (size_t)n) != NULL ||
	    real_boot_id(boot, sizeof(boot)) < 0)
		return false;
	snprintf(head, sizeof(head), "qkit-regions 3 %s\n", boot);
	if (strncmp(buf, head, strlen(head)) != 0)
		return false;
	c.text = buf + strlen(head);
	for (p = c.text; *p != '\0'; p++)
		lines += *p == '\n';
	if (each_file(dir, F_REGION | F_LOG | F_DATA, check_one, &c, NULL) != 0 ||
	    !c.ok)
		return false;
	return c.files > 0 && c.files == lines;
}

/* A failed recovery leaves this process's line in __db.register (so that
 * the next opener recovers), and Berkeley DB then refuses a second try
 * from the same pid ("one open DB_ENV handle per environment"). This
 * process has no handle on dir here and holds the open lock: turn such
 * a line into one of pid 0, which still reads as "a process died". */
static void register_scrub(const char *dir)
{
	char path[PATH_MAX], mine[32], line[26];
	off_t off;
	int fd;

	snprintf(path, sizeof(path), "%s/__db.register", dir);
	if ((fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return;
	snprintf(mine, sizeof(mine), "%24lu\n", (unsigned long)getpid());
	for (off = 0; off < (1 << 20); off += 25) {
		if (pread(fd, line, 25, off) != 25)
			break;
		if (memcmp(line, mine, 25) == 0) {
			snprintf(line, sizeof(line), "%24lu\n", 0ul);
			if (pwrite(fd, line, 25, off) != 25)
				break;
		}
	}
	close(fd);
}

/* Has a process died while it had the environment open (a non-empty
 * slot of __db.register that nobody holds a lock on)? It may have died
 * holding a lock, or worse a Berkeley DB mutex (which is not robust: the
 * next caller to want it would block for ever). Asked before every
 * operation; a yes makes us reopen first, which recovers (DB_REGISTER)
 * and makes every other user reopen too. Costs one pread and one fcntl
 * per other live process. Caller holds e->lock (any mode). */
static bool peer_died(struct henv *e)
{
	char path[PATH_MAX], buf[4096], mine[32];
	struct stat st;
	ssize_t n;
	off_t off;
	int fd;

	/* Never closed while the environment is open: closing any descriptor
	 * of a file drops all of the process's fcntl locks on it, Berkeley
	 * DB's registry slot lock included. */
	pthread_mutex_lock(&e->reg_lock);
	if (e->reg_fd < 0) {
		snprintf(path, sizeof(path), "%s/__db.register", e->dir);
		e->reg_fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	}
	fd = e->reg_fd;
	pthread_mutex_unlock(&e->reg_lock);
	if (fd < 0 || fstat(fd, &st) < 0)
		return false;
	snprintf(mine, sizeof(mine), "%24lu\n", (unsigned long)e->pid);
	for (off = 0; off < st.st_size && off < (1 << 20); off += n) {
		ssize_t i;

		n = pread(fd, buf, sizeof(buf) - sizeof(buf) % 25, off);
		if (n < 25)
			break;
		n -= n % 25;
		for (i = 0; i < n; i += 25) {
			struct flock fl = { .l_type = F_WRLCK,
					    .l_whence = SEEK_SET,
					    .l_start = off + i, .l_len = 1 };

			if (buf[i] == 'X' || memcmp(buf + i, mine, 25) == 0)
				continue;
			if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type == F_UNLCK)
				return true;
		}
	}
	return false;
}

/* The watchdog: a thread per open environment that, every half lock
 * wait, expires timed-out lock waits (Berkeley DB checks lock timeouts
 * only when its deadlock detector runs; without it a waiter blocked on a
 * lock of a stopped or killed process would wait for ever). It never
 * blocks on e->lock.
 * (DB_ENV->failchk is not used: its thread table adds a mutex to every
 * call, and a process killed while holding it hangs every other one.) */
static void *watchdog_main(void *arg)
{
	struct henv *e = arg;
	unsigned ms = lock_wait_ms / 2;

	if (ms > Q_HINTS_WATCH_MS)
		ms = Q_HINTS_WATCH_MS;
	if (ms < 10)
		ms = 10;
	pthread_mutex_lock(&e->watch_mx);
	while (!e->watch_stop) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)(ms % 1000) * 1000000L;
		ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		(void)pthread_cond_timedwait(&e->watch_cv, &e->watch_mx, &ts);
		if (e->watch_stop)
			break;
		pthread_mutex_unlock(&e->watch_mx);
		if (pthread_rwlock_tryrdlock(&e->lock) == 0) {
			if (e->env != NULL && atomic_load(&e->panic) == PANIC_NONE)
				(void)e->env->lock_detect(e->env, 0, DB_LOCK_EXPIRE,
							  NULL);
			pthread_rwlock_unlock(&e->lock);
		}
		pthread_mutex_lock(&e->watch_mx);
	}
	pthread_mutex_unlock(&e->watch_mx);
	return NULL;
}

static void watchdog_start(struct henv *e)
{
	sigset_t all, old;

	if (e->watch_on)
		return;
	e->watch_stop = false;
	/* no signal of the application is ever delivered to it */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if (pthread_create(&e->watch, NULL, watchdog_main, e) == 0) {
		e->watch_on = true;
		(void)pthread_setname_np(e->watch, "q-hints-watch");
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Caller holds e->lock for writing. The watchdog may still be inside
 * lock_detect (it holds e->lock for reading only via trylock, so not
 * here) -- except when a dead process left a Berkeley DB mutex locked:
 * then it is stuck for good and is abandoned after 2 s, with its
 * henv (never freed, see env_free). */
static bool watchdog_stop(struct henv *e)
{
	struct timespec ts;

	if (!e->watch_on)
		return true;
	pthread_mutex_lock(&e->watch_mx);
	e->watch_stop = true;
	pthread_cond_signal(&e->watch_cv);
	pthread_mutex_unlock(&e->watch_mx);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 2;
	if (pthread_timedjoin_np(e->watch, NULL, &ts) != 0) {
		pthread_detach(e->watch);
		e->watch_lost = true;
	}
	e->watch_on = false;
	return !e->watch_lost;
}

static bool peer_died_now(struct henv *e)
{
	bool dead;

	pthread_rwlock_rdlock(&e->lock);
	dead = e->env != NULL && peer_died(e);
	pthread_rwlock_unlock(&e->lock);
	return dead;
}

/* Take the use lock; when alone, throw the old regions away. Then open
 * the environment and every database of e. Returns a Berkeley DB code
 * (0 on success); -1 for a system error already in the error text. */
static int env_attach(struct henv *e, const char **error_r)
{
	char path[PATH_MAX];
	DB_ENV *env;
	struct hdb *d;
	int fd, rc;
	bool recover = false;

	snprintf(path, sizeof(path), "%s/%s", e->dir, use_lock_name);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return q_err(error_r, "open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
		/* Alone: the regions are only trusted with a valid stamp. */
		if (!stamp_check(e->dir)) {
			if (each_file(e->dir, F_REGION, unlink_one, NULL,
				      error_r) != 0) {
				close(fd);
				return -1;
			}
			/* Not left clean: always recover. The register alone
			 * cannot be trusted for that: Berkeley DB marks the
			 * dead slots empty before it registers itself and
			 * recovers, so an opener that failed there (ENOSPC)
			 * left a register that says "all is well" while the
			 * log holds commits that never reached the databases
			 * (seen: 592 of 2000 records lost). */
			recover = true;
		}
	} else if (errno != EWOULDBLOCK) {
		int err = errno;

		close(fd);
		return q_err(error_r, "flock %s: %s", path, strerror(err));
	}
	else {
		/* Others are in: a stamp can only be stale. */
		snprintf(path, sizeof(path), "%s/%s", e->dir, stamp_name);
		(void)unlink(path);
	}
	/* Converting EX to SH is not atomic, but every opener holds the open
	 * lock, so nobody can slip in between. */
	while (flock(fd, LOCK_SH) < 0) {
		if (errno != EINTR) {
			int err = errno;

			close(fd);
			return q_err(error_r, "flock %s: %s", path, strerror(err));
		}
	}
	e->use_fd = fd;
	register_scrub(e->dir);

	/* Berkeley DB creates its register file 0660 & ~umask: make it 0600
	 * first (an empty register means "recover", as a missing one). */
	snprintf(path, sizeof(path), "%s/__db.register", e->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
		  (recover ? O_TRUNC : 0), 0600);
	if (fd >= 0)
		close(fd);

	if ((rc = db_env_create(&env, 0)) != 0)
		return rc;
	env->app_private = e;
	env->set_errcall(env, env_errcall);
	env->set_msgcall(env, env_msgcall);
	atomic_store(&e->panic, PANIC_NONE);
	if ((rc = env->set_event_notify(env, env_event)) != 0 ||
	    (rc = env->set_cachesize(env, 0, Q_HINTS_CACHE, 1)) != 0 ||
	    (rc = env->set_lg_max(env, Q_HINTS_LOG_MAX)) != 0 ||
	    (rc = env->set_lg_filemode(env, 0600)) != 0 ||
	    (rc = env->set_lk_max_locks(env, Q_HINTS_LOCKS)) != 0 ||
	    (rc = env->set_lk_max_objects(env, Q_HINTS_LOCKS)) != 0 ||
	    (rc = env->set_flags(env, DB_TXN_WRITE_NOSYNC, 1)) != 0 ||
	    /* a lock wait that timed out is not a deadlock */
	    (rc = env->set_flags(env, DB_TIME_NOTGRANTED, 1)) != 0 ||
	    /* write the regions it creates: ENOSPC, not SIGBUS later */
	    (rc = env->set_flags(env, DB_REGION_INIT, 1)) != 0 ||
	    (rc = env->log_set_config(env, DB_LOG_AUTO_REMOVE, 1)) != 0 ||
	    (rc = env->set_lk_detect(env, DB_LOCK_DEFAULT)) != 0 ||
	    (rc = env->set_timeout(env, lock_wait_ms * 1000u,
				   DB_SET_LOCK_TIMEOUT)) != 0) {
		(void)env->close(env, 0);
		return rc;
	}
	rc = env->open(env, e->dir,
		       DB_CREATE | DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG |
		       DB_INIT_MPOOL | DB_THREAD | DB_REGISTER | DB_RECOVER,
		       0600);
	if (rc != 0) {
		(void)env->close(env, 0);
		return rc;
	}
	e->env = env;
	watchdog_start(e);
	/* room for the regions to grow (see regions_reserve) */
	if (each_file(e->dir, F_REGION, region_open_one, e, error_r) != 0 ||
	    regions_reserve(e, true, &e->rsv_err, error_r) < 0)
		return -1;
	for (d = e->dbs; d != NULL; d = d->next)
		if (d->db == NULL && (rc = open_one_db(e, d)) != 0)
			return rc;
	return 0;
}

/* Lock dir against other openers: LOCK_EX on the directory, re-checked
 * against the path (someone may have moved it aside meanwhile). */
/* flock(LOCK_EX) with a bound: an opener stopped (^Z) while it held the
 * lock must not hang everybody for ever. */
static int lock_wait(int fd, const char *dir, const char **error_r)
{
	struct timespec t0, now;
	unsigned i;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 1;; i++) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK && errno != EINTR)
			return q_err(error_r, "flock %s: %s", dir, strerror(errno));
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - t0.tv_sec >= Q_HINTS_OPEN_WAIT)
			return q_err(error_r, "%s: another process has been opening "
				     "or recovering the hints for %d s; giving up",
				     dir, Q_HINTS_OPEN_WAIT);
		backoff(i < 40 ? i : 40);
	}
}

static int open_lock(const char *dir, const char **error_r)
{
	struct stat st1, st2;
	int fd, i;

	for (i = 0; i < 20; i++) {
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return q_err(error_r, "mkdir %s: %s", dir, strerror(errno));
		fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return q_err(error_r, "open %s: %s", dir, strerror(errno));
		if (lock_wait(fd, dir, error_r) < 0) {
			close(fd);
			return -1;
		}
		if (fstat(fd, &st1) == 0 && stat(dir, &st2) == 0 &&
		    st1.st_dev == st2.st_dev && st1.st_ino == st2.st_ino)
			return fd;
		close(fd);
	}
	return q_err(error_r, "%s keeps changing under us", dir);
}

/* Rename dir to dir.corrupt-<time>[-N]; the new name in aside. */
static int move_aside(const char *dir, char *aside, size_t size,
		      const char **error_r)
{
	long t = (long)time(NULL);
	struct stat st;
	int i;

	for (i = 0; i < 100; i++) {
		if (i == 0)
			snprintf(aside, size, "%s.corrupt-%ld", dir, t);
		else
			snprintf(aside, size, "%s.corrupt-%ld-%d", dir, t, i);
		if (lstat(aside, &st) < 0 && errno == ENOENT)
			break;
	}
	if (rename(dir, aside) < 0)
		return q_err(error_r, "rename %s to %s: %s", dir, aside,
			     strerror(errno));
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return q_err(error_r, "mkdir %s: %s", dir, strerror(errno));
	return 0;
}

/* Open e (environment and databases), recovering and, when it cannot be
 * opened, moving the directory aside. e->env must be NULL. A move is
 * described in *notice (malloc'd) when notice != NULL. Caller holds
 * e->lock for writing (or e is not shared yet). */
static int env_start(struct henv *e, char **notice, const char **error_r)
{
	char aside[PATH_MAX + 64], reason[600];
	int lfd, lfd2, rc;
	bool full;

	if ((lfd = open_lock(e->dir, error_r)) < 0)
		return -1;
	db_msg_clear();
	e->rsv_err = 0;
	rc = env_attach(e, error_r);
	full = rc != 0 && rc != -1 && rc_full(rc);
	if (rc == DB_RUNRECOVERY && !full) {
		/* DB_REGISTER: another process may have triggered recovery
		 * while we opened; once more. */
		env_stop(e, false);
		backoff(100);
		db_msg_clear();
		rc = env_attach(e, error_r);
		full = rc != 0 && rc != -1 && rc_full(rc);
	}
	if (rc == 0) {
		close(lfd);
		return 0;
	}
	if (full) {
		/* A full disk (recovery could not write its log, a region
		 * could not be made) is no damage: moving the directory aside
		 * would throw the retry records away and free nothing. */
		db_result(rc, "environment", "open", NULL, 0, error_r);
		q_err(error_r, "hints %s: disk full: cannot open or recover the "
		      "hints (try again when there is room; nothing was moved "
		      "aside): %s", e->dir, q_err_last());
		full_say(e->dir, q_err_last());
		env_stop(e, false);
		regions_drop_if_alone(e->dir);
		close(lfd);
		return -1;
	}
	if (rc == -1 && errno_full(e->rsv_err)) {
		/* no room for the regions' reserve (regions_reserve) */
		env_stop(e, false);
		regions_drop_if_alone(e->dir);
		close(lfd);
		return -1;
	}
	if (rc == -1 || !rc_corrupt(rc)) {
		if (rc != -1)
			db_result(rc, "environment", "open", NULL, 0, error_r);
		env_stop(e, false);
		close(lfd);
		return -1;
	}
	snprintf(reason, sizeof(reason), "%s%s%s%s", rc_text(rc),
		 db_msg[0] != '\0' ? " (" : "", db_msg,
		 db_msg[0] != '\0' ? ")" : "");
	env_stop(e, false);
	if (!room_for_fresh(e->dir, aside, sizeof(aside))) {
		q_err(error_r, "hints %s: unusable (%s), not moved aside: disk "
		      "full: %s; try again when there is room", e->dir, reason,
		      aside);
		full_say(e->dir, q_err_last());
		close(lfd);
		return -1;
	}
	if (move_aside(e->dir, aside, sizeof(aside), error_r) < 0) {
		close(lfd);
		return -1;
	}
	/* Hold the new directory's open lock before letting the old go. */
	lfd2 = open_lock(e->dir, error_r);
	close(lfd);
	if (lfd2 < 0)
		return -1;
	db_msg_clear();
	rc = env_attach(e, error_r);
	if (rc != 0) {
		if (rc != -1)
			db_result(rc, "environment", "open", NULL, 0, error_r);
		env_stop(e, false);
		close(lfd2);
		return q_err(error_r, "%s was unusable (%s) and was moved to %s; "
			     "a fresh one cannot be opened either: %s",
			     e->dir, reason, aside, q_err_last());
	}
	close(lfd2);
	if (notice != NULL) {
		free(*notice);
		if (asprintf(notice, "hints databases in %s were unusable (%s); "
			     "moved them to %s and started afresh", e->dir,
			     reason, aside) < 0)
			*notice = NULL;
	}
	return 0;
}

/* Close e and open it again; with corrupt != NULL (the reason), move
 * the directory aside first. Caller holds e->lock for writing. A move is
 * described in *notice (malloc'd). 0 or -1. */
static int env_restart_locked(struct henv *e, const char *corrupt,
			      char **notice, const char **error_r)
{
	char blocked[1200];
	int ret = 0;

	env_stop(e, false);
	if (corrupt != NULL &&
	    !room_for_fresh(e->dir, blocked, sizeof(blocked))) {
		/* moving aside would not help: fail this operation, and
		 * reopen as it is for the others */
		q_err(error_r, "hints %s: unusable (%s), not moved aside: disk "
		      "full: %s; try again when there is room", e->dir, corrupt,
		      blocked);
		snprintf(blocked, sizeof(blocked), "%s", q_err_last());
		full_say(e->dir, blocked);
		corrupt = NULL;
	} else {
		blocked[0] = '\0';
	}
	if (corrupt != NULL) {
		char aside[PATH_MAX + 64];
		int lfd = open_lock(e->dir, error_r);

		if (lfd < 0 || move_aside(e->dir, aside, sizeof(aside),
					  error_r) < 0) {
			ret = -1;
		} else {
			free(*notice);
			if (asprintf(notice, "hints databases in %s were unusable "
				     "(%s); moved them to %s and started afresh",
				     e->dir, corrupt, aside) < 0)
				*notice = NULL;
		}
		if (lfd >= 0)
			close(lfd);
	}
	if (ret == 0 && env_start(e, notice, error_r) < 0)
		ret = -1;
	e->gen++;
	if (blocked[0] != '\0') {
		q_err(error_r, "%s", blocked);
		ret = -1;
	}
	return ret;
}

/* Reopen after a panic. gen: what the caller saw (another thread may
 * have reopened already). poison: a process died with the environment
 * open and may hold a mutex; panic the environment first, so that
 * closing our handles touches no mutex (and every other user reopens;
 * our reopen recovers). Returns 0, 1 when the directory was moved aside
 * (the notice is the error text), or -1. */
static int env_restart(struct henv *e, unsigned gen, const char *corrupt,
		       bool poison, const char **error_r)
{
	char *notice = NULL;
	int ret;

	pthread_rwlock_wrlock(&e->lock);
	if (e->gen != gen) {
		pthread_rwlock_unlock(&e->lock);
		return 0;
	}
	if (poison && e->env != NULL)
		(void)e->env->set_flags(e->env, DB_PANIC_ENVIRONMENT, 1);
	ret = env_restart_locked(e, corrupt, &notice, error_r);
	pthread_rwlock_unlock(&e->lock);
	if (ret == 0 && notice != NULL) {
		/* Found by an operation, whose caller may well ignore its
		 * error (index updates do): the main log, and the terminal. */
		q_log("hints: %s", notice);
		notice_tell(notice);
		q_err(error_r, "%s", notice);
		ret = 1;
	}
	free(notice);
	return ret;
}

static struct hdb *env_db(struct henv *e, const char *name, bool dup)
{
	struct hdb *d;

	for (d = e->dbs; d != NULL; d = d->next)
		if (strcmp(d->name, name) == 0)
			return d;
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return NULL;
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->dup = dup;
	d->next = e->dbs;
	e->dbs = d;
	return d;
}

static void env_free(struct henv *e)
{
	struct hdb *d, *next;

	if (e->watch_lost)      /* an abandoned watchdog may still use it */
		return;

	for (d = e->dbs; d != NULL; d = next) {
		next = d->next;
		free(d);
	}
	pthread_rwlock_destroy(&e->lock);
	pthread_mutex_destroy(&e->reg_lock);
	pthread_mutex_destroy(&e->watch_mx);
	pthread_cond_destroy(&e->watch_cv);
	free(e->dir);
	free(e);
}

static bool transport_ok(const char *t)
{
	size_t n = strlen(t);

	return n > 0 && n <= Q_TRANSPORT_MAX && t[0] != '-' &&
	       strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		      "0123456789_-") == n;
}

int q_hints_open(const char *dir, const char *transport,
		 struct q_hints **h_r, const char **notice_r,
		 const char **error_r)
{
	char real[PATH_MAX], name[16 + Q_TRANSPORT_MAX];
	char *notice = NULL;
	struct q_hints *h;
	struct henv *e;
	pid_t pid = getpid();
	bool fresh = false, need_open = false;
	int i, ret = -1;

	*h_r = NULL;
	if (notice_r != NULL)
		*notice_r = NULL;
	if (transport == NULL || !transport_ok(transport))
		return q_err(error_r, "bad transport name \"%s\" (1 to %d "
			     "letters, digits, '_' or '-')",
			     transport != NULL ? transport : "", Q_TRANSPORT_MAX);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return q_err(error_r, "mkdir %s: %s", dir, strerror(errno));
	if (realpath(dir, real) == NULL)
		return q_err(error_r, "%s: %s", dir, strerror(errno));
	if ((h = calloc(1, sizeof(*h))) == NULL)
		return q_err(error_r, "%s", strerror(ENOMEM));
	snprintf(h->transport, sizeof(h->transport), "%s", transport);

	pthread_mutex_lock(&envs_lock);
	for (e = envs; e != NULL; e = e->next)
		if (e->pid == pid && strcmp(e->dir, real) == 0)
			break;
	if (e == NULL) {
		if ((e = calloc(1, sizeof(*e))) == NULL ||
		    (e->dir = strdup(real)) == NULL) {
			free(e);
			q_err(error_r, "%s", strerror(ENOMEM));
			goto out;
		}
		e->pid = pid;
		e->use_fd = -1;
		e->reg_fd = -1;
		pthread_rwlock_init(&e->lock, NULL);
		pthread_mutex_init(&e->reg_lock, NULL);
		pthread_mutex_init(&e->watch_mx, NULL);
		pthread_cond_init(&e->watch_cv, NULL);
		fresh = true;
	}
	pthread_rwlock_wrlock(&e->lock);
	for (i = 0; i < Q_DB__COUNT; i++) {
		if (i == Q_DB_WAIT || i == Q_DB_SERIALIZE)
			snprintf(name, sizeof(name), "%s-%s", db_base[i], transport);
		else
			snprintf(name, sizeof(name), "%s", db_base[i]);
		if ((h->db[i] = env_db(e, name, i == Q_DB_WAIT)) == NULL) {
			pthread_rwlock_unlock(&e->lock);
			q_err(error_r, "%s", strerror(ENOMEM));
			goto fail_env;
		}
		if (h->db[i]->db == NULL)
			need_open = true;
	}
	if (e->env == NULL) {
		if (env_start(e, &notice, error_r) < 0) {
			pthread_rwlock_unlock(&e->lock);
			goto fail_env;
		}
		e->gen++;
	} else if (need_open) {
		struct hdb *d;
		int rc = 0;

		db_msg_clear();
		for (d = e->dbs; d != NULL && rc == 0; d = d->next)
			if (d->db == NULL)
				rc = open_one_db(e, d);
		if (rc != 0) {
			char reason[600];

			db_result(rc, "environment", "open", NULL, 0, error_r);
			/* A damaged file in a live environment: start over. */
			snprintf(reason, sizeof(reason), "%s", q_err_last());
			if (!rc_corrupt(rc) ||
			    env_restart_locked(e, reason, &notice, error_r) < 0) {
				pthread_rwlock_unlock(&e->lock);
				goto fail_env;
			}
		}
	}
	pthread_rwlock_unlock(&e->lock);
	e->refs++;
	if (fresh) {
		e->next = envs;
		envs = e;
	}
	h->e = e;
	*h_r = h;
	h = NULL;
	ret = 0;
	if (notice != NULL && notice_r != NULL) {
		/* the caller logs it (q_spool_hints does) */
		snprintf(notice_buf, sizeof(notice_buf), "%s", notice);
		*notice_r = notice_buf;
	}
	goto out;

fail_env:
	if (fresh) {
		env_stop(e, false);
		env_free(e);
	}
out:
	pthread_mutex_unlock(&envs_lock);
	/* the hook, with no lock of ours held (it may open hints) */
	if (ret == 0 && notice != NULL)
		notice_tell(notice);
	free(notice);
	free(h);
	return ret;
}

void q_hints_close(struct q_hints **hp)
{
	struct q_hints *h = *hp;
	struct henv *e, **pp;

	if (h == NULL)
		return;
	*hp = NULL;
	e = h->e;
	free(h);
	/* A forked child leaves its parent's environment alone. */
	if (e->pid != getpid())
		return;
	pthread_mutex_lock(&envs_lock);
	if (--e->refs > 0) {
		pthread_mutex_unlock(&envs_lock);
		return;
	}
	for (pp = &envs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	/* Still under envs_lock: an open of the same directory by another
	 * thread must wait until this handle has left (DB_REGISTER allows a
	 * process one environment handle). */
	pthread_rwlock_wrlock(&e->lock);
	env_stop(e, true);
	pthread_rwlock_unlock(&e->lock);
	pthread_mutex_unlock(&envs_lock);
	env_free(e);
}

const char *q_hints_db_name(const struct q_hints *h, enum q_db db)
{
	if ((int)db < 0 || db >= Q_DB__COUNT)
		return "?";
	return h->db[db]->name;
}

int q_hints_db_lookup(const struct q_hints *h, const char *name,
		      enum q_db *db_r, const char **error_r)
{
	int i;

	for (i = 0; i < Q_DB__COUNT; i++) {
		if (strcmp(name, db_base[i]) == 0 ||
		    strcmp(name, h->db[i]->name) == 0) {
			*db_r = (enum q_db)i;
			return 0;
		}
	}
	return q_err(error_r, "no hints database \"%s\" (index, retry, "
		     "wait-%s, serialize-%s, sessions)", name, h->transport,
		     h->transport);
}

/* ------------------------------------------------------------------ */
/* running an operation */

struct op {
	DB_ENV *env;
	DB *db;
	bool dup;
	bool write;
	bool no_retry;          /* set when a commit failed: do not redo */
};

typedef int op_fn(struct op *op, void *arg);

/* mode of hints_run */
#define RUN_READ   0
#define RUN_WRITE  1
#define RUN_EXCL   2    /* a write with no other use of e in this process */

static int hints_run(struct q_hints *h, enum q_db which, const char *what,
		     const void *key, size_t klen, int mode, op_fn *fn,
		     void *arg, const char **error_r)
{
	struct henv *e = h->e;
	struct hdb *d;
	unsigned tries = 0, reopens = 0, timeouts = 0;
	int rc, err;

	if ((int)which < 0 || which >= Q_DB__COUNT)
		return q_err(error_r, "hints: no database number %d", (int)which);
	d = h->db[which];
	for (;;) {
		struct op op = { .dup = d->dup, .write = mode != RUN_READ };
		unsigned gen;
		int panic;

		db_msg_clear();
		if (mode == RUN_EXCL)
			pthread_rwlock_wrlock(&e->lock);
		else
			pthread_rwlock_rdlock(&e->lock);
		gen = e->gen;
		if (e->env != NULL && reopens < Q_HINTS_REOPENS && peer_died(e)) {
			/* before Berkeley DB can block on what it left */
			pthread_rwlock_unlock(&e->lock);
			reopens++;
			if (env_restart(e, gen, NULL, true, error_r) != 0)
				return -1;
			continue;
		}
		if (e->env == NULL || d->db == NULL) {
			rc = HINTS_NOT_OPEN;
		} else if (regions_reserve(e, false, &err, error_r) < 0) {
			/* no room for the cache to grow: fail now, not with
			 * SIGBUS inside Berkeley DB */
			pthread_rwlock_unlock(&e->lock);
			return -1;
		} else {
			op.env = e->env;
			op.db = d->db;
			rc = fn(&op, arg);
			if (rc == 0 && mode != RUN_READ) {
				atomic_store(&d->wrote, true);
				if ((atomic_fetch_add(&e->writes, 1) + 1) %
				    Q_HINTS_CKP_EVERY == 0)
					(void)e->env->txn_checkpoint(e->env,
							Q_HINTS_CKP_KB, 0, 0);
			}
		}
		pthread_rwlock_unlock(&e->lock);
		if (rc == DB_LOCK_NOTGRANTED && ++timeouts >= lock_timeouts)
			return q_err(error_r, "hints %s: %s: a lock has been held "
				     "for %u ms (a stopped process?)", d->name,
				     what, lock_wait_ms * lock_timeouts);
		if (rc_retry(rc) && ++tries < Q_HINTS_TRIES) {
			backoff(tries);
			continue;
		}
		/* EINVAL too: damaged logs show as "file has LSN past end
		 * of log" when a page is written. Our own arguments are
		 * checked before they reach Berkeley DB. */
		if (rc != HINTS_NOT_OPEN && rc != DB_RUNRECOVERY &&
		    rc != DB_PAGE_NOTFOUND && rc != DB_VERIFY_BAD &&
		    rc != DB_CHKSUM_FAIL && rc != EINVAL)
			break;
		if (op.no_retry || reopens >= Q_HINTS_REOPENS)
			break;
		panic = atomic_load(&e->panic);
		{
			char reason[600];
			const char *corrupt = NULL;
			int r;

			/* A page-level failure right after a reopen, and no
			 * process died meanwhile: damage. (A plain panic is
			 * also what another process's recovery, or its
			 * reaction to a dead process, looks like: reopen.) */
			if (reopens > 0 && rc != HINTS_NOT_OPEN &&
			    panic != PANIC_REGISTER && !rc_full(rc) &&
			    (rc != DB_RUNRECOVERY ||
			     strstr(db_msg, "checksum") != NULL) &&
			    !peer_died_now(e)) {
				snprintf(reason, sizeof(reason), "%s%s%s%s",
					 rc_text(rc), db_msg[0] ? " (" : "",
					 db_msg, db_msg[0] ? ")" : "");
				corrupt = reason;
			}
			reopens++;
			r = env_restart(e, gen, corrupt, false, error_r);
			if (r < 0)
				return -1;
			if (r == 1)
				return -1;
		}
	}
	if (rc_retry(rc))
		return q_err(error_r, "hints %s: %s: still deadlocked after %u "
			     "tries", d->name, what, tries);
	if (rc != 0 && rc != DB_NOTFOUND && rc != DB_KEYEMPTY && rc_full(rc)) {
		db_result(rc, d->name, what, key, klen, error_r);
		full_say(e->dir, q_err_last());
		return -1;
	}
	return db_result(rc, d->name, what, key, klen, error_r);
}

static void dbt_in(DBT *t, const void *p, size_t n)
{
	memset(t, 0, sizeof(*t));
	t->data = (void *)p;
	t->size = (u_int32_t)n;
}

/* A DBT that receives into buf (user memory, grown on DB_BUFFER_SMALL). */
static int dbt_buf(DBT *t, struct q_buf *b, size_t need)
{
	size_t cap;

	if (need < 64)
		need = 64;
	if (b->data == NULL || b->cap - 1 - b->len < need) {
		if (q_buf_reserve(b, need) < 0)
			return HINTS_ENOMEM;
	}
	cap = b->cap - 1 - b->len;
	if (cap > UINT32_MAX)
		cap = UINT32_MAX;
	memset(t, 0, sizeof(*t));
	t->data = b->data + b->len;
	t->ulen = (u_int32_t)cap;
	t->flags = DB_DBT_USERMEM;
	return 0;
}

static bool key_too_big(size_t klen)
{
	return klen == 0 || klen > UINT32_MAX / 2;
}

/* ---- get ---- */

struct get_arg {
	const void *key;
	size_t klen;
	struct q_buf *val;
};

static int op_get(struct op *op, void *varg)
{
	struct get_arg *a = varg;
	DBT k, v;
	int rc;

	q_buf_reset(a->val);
	dbt_in(&k, a->key, a->klen);
	if ((rc = dbt_buf(&v, a->val, 256)) != 0)
		return rc;
	rc = op->db->get(op->db, NULL, &k, &v, 0);
	if (rc == DB_BUFFER_SMALL) {
		if ((rc = dbt_buf(&v, a->val, v.size)) != 0)
			return rc;
		rc = op->db->get(op->db, NULL, &k, &v, 0);
	}
	if (rc == 0) {
		a->val->len = v.size;
		a->val->data[v.size] = '\0';
	}
	return rc;
}

int q_hints_get(struct q_hints *h, enum q_db db, const void *key,
		size_t klen, struct q_buf *val, const char **error_r)
{
	struct get_arg a = { key, klen, val };

	if (key_too_big(klen))
		return q_err(error_r, "hints: bad key length %zu", klen);
	return hints_run(h, db, "get", key, klen, RUN_READ, op_get, &a, error_r);
}

/* ---- put, del ---- */

struct put_arg {
	const void *key, *val;
	size_t klen, vlen;
};

static int op_put(struct op *op, void *varg)
{
	struct put_arg *a = varg;
	DBT k, v;
	int rc;

	dbt_in(&k, a->key, a->klen);
	dbt_in(&v, a->val, a->vlen);
	rc = op->db->put(op->db, NULL, &k, &v, op->dup ? DB_NODUPDATA : 0);
	if (rc == DB_KEYEXIST)
		rc = 0;
	return rc;
}

int q_hints_put(struct q_hints *h, enum q_db db, const void *key,
		size_t klen, const void *val, size_t vlen,
		const char **error_r)
{
	struct put_arg a = { key, val, klen, vlen };

	if (key_too_big(klen) || vlen > UINT32_MAX / 2)
		return q_err(error_r, "hints: bad key or value length");
	return hints_run(h, db, "put", key, klen, RUN_WRITE, op_put, &a, error_r);
}

static int op_del(struct op *op, void *varg)
{
	struct put_arg *a = varg;
	DBT k;

	dbt_in(&k, a->key, a->klen);
	return op->db->del(op->db, NULL, &k, 0);
}

int q_hints_del(struct q_hints *h, enum q_db db, const void *key,
		size_t klen, const char **error_r)
{
	struct put_arg a = { key, NULL, klen, 0 };

	if (key_too_big(klen))
		return q_err(error_r, "hints: bad key length %zu", klen);
	return hints_run(h, db, "delete", key, klen, RUN_WRITE, op_del, &a, error_r);
}

/* ---- batches ---- */

struct batch_arg {
	const struct q_hints_item *it;
	size_t n;
};

static int op_batch(struct op *op, void *varg)
{
	struct batch_arg *a = varg;
	DB_TXN *txn;
	DBC *c = NULL;
	size_t i;
	int rc;

	if ((rc = op->env->txn_begin(op->env, NULL, &txn, 0)) != 0)
		return rc;
	for (i = 0; i < a->n && rc == 0; i++) {
		const struct q_hints_item *it = &a->it[i];
		DBT k, v;

		dbt_in(&k, it->key, it->klen);
		dbt_in(&v, it->val, it->vlen);
		if (it->op == Q_HINTS_BPUT) {
			rc = op->db->put(op->db, txn, &k, &v,
					 op->dup ? DB_NODUPDATA : 0);
			if (rc == DB_KEYEXIST)
				rc = 0;
		} else if (op->dup && it->val != NULL) {
			if (c == NULL &&
			    (rc = op->db->cursor(op->db, txn, &c, 0)) != 0)
				break;
			rc = c->get(c, &k, &v, DB_GET_BOTH | DB_RMW);
			if (rc == 0)
				rc = c->del(c, 0);
			if (rc == DB_NOTFOUND)
				rc = 0;
		} else {
			rc = op->db->del(op->db, txn, &k, 0);
			if (rc == DB_NOTFOUND)
				rc = 0;
		}
	}
	if (c != NULL) {
		int rc2 = c->close(c);

		if (rc == 0)
			rc = rc2;
	}
	if (rc != 0) {
		(void)txn->abort(txn);
		return rc;
	}
	return txn->commit(txn, 0);
}

int q_hints_batch(struct q_hints *h, enum q_db db,
		  const struct q_hints_item *items, size_t n,
		  const char **error_r)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (key_too_big(items[i].klen) || items[i].vlen > UINT32_MAX / 2 ||
		    (items[i].op != Q_HINTS_BPUT && items[i].op != Q_HINTS_BDEL))
			return q_err(error_r, "hints: bad batch item %zu", i);
	for (i = 0; i < n; i += Q_HINTS_BATCH_MAX) {
		struct batch_arg a = { items + i, n - i < Q_HINTS_BATCH_MAX ?
				       n - i : Q_HINTS_BATCH_MAX };

		if (hints_run(h, db, "batch", items[i].key, items[i].klen,
			      RUN_WRITE, op_batch, &a, error_r) < 0)
			return -1;
	}
	return 0;
}

/* ---- update ---- */

struct upd_arg {
	const void *key;
	size_t klen;
	q_hints_update_fn *fn;
	void *ctx;
	struct q_buf old, out;
	bool aborted;
	char fn_err[1024];
};

static int op_update(struct op *op, void *varg)
{
	struct upd_arg *a = varg;
	DB_TXN *txn;
	DBT k, v;
	int rc, what;

	q_buf_reset(&a->old);
	q_buf_reset(&a->out);
	a->aborted = false;
	if ((rc = op->env->txn_begin(op->env, NULL, &txn, 0)) != 0)
		return rc;
	dbt_in(&k, a->key, a->klen);
	if ((rc = dbt_buf(&v, &a->old, 256)) != 0)
		goto abort;
	rc = op->db->get(op->db, txn, &k, &v, DB_RMW);
	if (rc == DB_BUFFER_SMALL) {
		if ((rc = dbt_buf(&v, &a->old, v.size)) != 0)
			goto abort;
		rc = op->db->get(op->db, txn, &k, &v, DB_RMW);
	}
	if (rc != 0 && rc != DB_NOTFOUND)
		goto abort;
	if (rc == 0) {
		a->old.len = v.size;
		a->old.data[v.size] = '\0';
	}
	q_err(NULL, "update of a hints record aborted by its caller");
	what = a->fn(rc == 0 ? a->old.data : NULL, rc == 0 ? a->old.len : 0,
		     &a->out, a->ctx);
	switch (what) {
	case Q_HINTS_KEEP:
		rc = 0;
		break;
	case Q_HINTS_PUT:
		dbt_in(&v, a->out.data != NULL ? a->out.data : "", a->out.len);
		rc = op->db->put(op->db, txn, &k, &v, 0);
		break;
	case Q_HINTS_DELETE:
		rc = op->db->del(op->db, txn, &k, 0);
		if (rc == DB_NOTFOUND)
			rc = 0;
		break;
	default:
		a->aborted = true;
		snprintf(a->fn_err, sizeof(a->fn_err), "%s", q_err_last());
		rc = HINTS_ABORTED;
		break;
	}
	if (rc != 0)
		goto abort;
	if ((rc = txn->commit(txn, 0)) != 0)
		op->no_retry = true;
	return rc;
abort:
	(void)txn->abort(txn);
	return rc;
}

int q_hints_update(struct q_hints *h, enum q_db db, const void *key,
		   size_t klen, q_hints_update_fn *fn, void *ctx,
		   const char **error_r)
{
	struct upd_arg a = { .key = key, .klen = klen, .fn = fn, .ctx = ctx };
	int ret;

	if (key_too_big(klen))
		return q_err(error_r, "hints: bad key length %zu", klen);
	if (db == Q_DB_WAIT)
		return q_err(error_r, "hints: update is not for the wait lists");
	ret = hints_run(h, db, "update", key, klen, RUN_WRITE, op_update, &a,
			error_r);
	if (ret < 0 && a.aborted)   /* fn's own text */
		q_err(error_r, "%s", a.fn_err);
	q_buf_free(&a.old);
	q_buf_free(&a.out);
	return ret < 0 ? -1 : 0;
}

/* ---- walks ---- */

struct walk {
	const void *prefix;
	size_t plen;
	q_hints_iter_fn *fn;        /* NULL: count */
	void *ctx;
	size_t count;
	bool started, done;
	struct q_buf lastk, lastv;  /* the last pair handed out */
	struct q_buf bulk;          /* the current chunk */
	struct q_buf sk, sv;        /* scratch for positioning */
	size_t bulk_len;            /* bytes of the chunk in bulk */
	u_int32_t bulk_ulen;        /* the buffer size it was read with (the
				       bulk index grows down from its end) */
};

/* Position cursor c with flag. The search key (and, for
 * DB_GET_BOTH_RANGE, data) come from sk/sklen and sv/svlen; the found pair
 * lands in w->sk / w->sv (grown on DB_BUFFER_SMALL). With want_val false
 * the data is not copied (partial get of 0 bytes). */
static int pos_get(DBC *c, struct walk *w, u_int32_t flag,
		   const void *sk, size_t sklen, const void *sv, size_t svlen,
		   bool want_val, DBT *k, DBT *v)
{
	size_t kneed = sklen + 256, vneed = svlen + 256;
	int rc = 0, i;

	for (i = 0; i < 4; i++) {
		q_buf_reset(&w->sk);
		q_buf_reset(&w->sv);
		if (q_buf_reserve(&w->sk, kneed) < 0 ||
		    q_buf_reserve(&w->sv, vneed) < 0)
			return HINTS_ENOMEM;
		memset(k, 0, sizeof(*k));
		k->data = w->sk.data;
		k->ulen = (u_int32_t)(w->sk.cap - 1);
		k->flags = DB_DBT_USERMEM;
		if (sk != NULL && sklen > 0) {
			memcpy(k->data, sk, sklen);
			k->size = (u_int32_t)sklen;
		}
		memset(v, 0, sizeof(*v));
		v->data = w->sv.data;
		v->flags = DB_DBT_USERMEM;
		if (want_val) {
			v->ulen = (u_int32_t)(w->sv.cap - 1);
			if (sv != NULL && svlen > 0) {
				memcpy(v->data, sv, svlen);
				v->size = (u_int32_t)svlen;
			}
		} else {
			v->flags |= DB_DBT_PARTIAL;
			v->ulen = 0;
			v->dlen = 0;
		}
		rc = c->get(c, k, v, flag);
		if (rc != DB_BUFFER_SMALL)
			return rc;
		if (k->size > kneed)
			kneed = k->size;
		if (v->size > vneed)
			vneed = v->size;
	}
	return rc;
}

static u_int32_t bulk_ulen(const struct q_buf *b)
{
	size_t n = (b->cap - 1) & ~(size_t)1023;

	return n > UINT32_MAX - 1023 ? UINT32_MAX & ~1023u : (u_int32_t)n;
}

static bool same(const DBT *t, const struct q_buf *b)
{
	return t->size == b->len && memcmp(t->data, b->data, b->len) == 0;
}

/* Fetch the next chunk into w->bulk (cursor opened and closed here). */
static int op_chunk(struct op *op, void *varg)
{
	struct walk *w = varg;
	DBC *c;
	DBT k, v, bk, bv;
	int rc;

	w->bulk_len = 0;
	if ((rc = op->db->cursor(op->db, NULL, &c, 0)) != 0)
		return rc;
	if (!w->started) {
		rc = pos_get(c, w, w->plen > 0 ? DB_SET_RANGE : DB_FIRST,
			     w->prefix, w->plen, NULL, 0, false, &k, &v);
	} else if (op->dup) {
		rc = pos_get(c, w, DB_GET_BOTH_RANGE, w->lastk.data, w->lastk.len,
			     w->lastv.data, w->lastv.len, true, &k, &v);
		if (rc == 0 && same(&k, &w->lastk) && same(&v, &w->lastv))
			rc = pos_get(c, w, DB_NEXT, NULL, 0, NULL, 0, false, &k, &v);
		else if (rc == DB_NOTFOUND) {
			rc = pos_get(c, w, DB_SET_RANGE, w->lastk.data,
				     w->lastk.len, NULL, 0, false, &k, &v);
			if (rc == 0 && same(&k, &w->lastk))
				rc = pos_get(c, w, DB_NEXT_NODUP, NULL, 0, NULL, 0,
					     false, &k, &v);
		}
	} else {
		rc = pos_get(c, w, DB_SET_RANGE, w->lastk.data, w->lastk.len,
			     NULL, 0, false, &k, &v);
		if (rc == 0 && same(&k, &w->lastk))
			rc = pos_get(c, w, DB_NEXT, NULL, 0, NULL, 0, false, &k, &v);
	}
	if (rc != 0)
		goto out;
	for (;;) {
		memset(&bk, 0, sizeof(bk));
		bk.data = w->sk.data;
		bk.ulen = (u_int32_t)(w->sk.cap - 1);
		bk.flags = DB_DBT_USERMEM;
		memset(&bv, 0, sizeof(bv));
		bv.data = w->bulk.data;
		bv.ulen = bulk_ulen(&w->bulk);
		bv.flags = DB_DBT_USERMEM;
		rc = c->get(c, &bk, &bv, DB_CURRENT | DB_MULTIPLE_KEY);
		if (rc != DB_BUFFER_SMALL)
			break;
		if (bk.size > bk.ulen &&
		    q_buf_reserve(&w->sk, bk.size) < 0) {
			rc = HINTS_ENOMEM;
			break;
		}
		if (bv.size > bv.ulen) {
			size_t want = w->bulk.cap * 2;

			if (want < (size_t)bv.size + 4096)
				want = (size_t)bv.size + 4096;
			if (q_buf_reserve(&w->bulk, want) < 0) {
				rc = HINTS_ENOMEM;
				break;
			}
		}
	}
	if (rc == 0) {
		w->bulk_len = bv.size;
		w->bulk_ulen = bv.ulen;
	}
out:
	(void)c->close(c);
	return rc;
}

/* Hand out the pairs of the chunk; 0 to go on, 1 when done, -1. */
static int walk_chunk(struct walk *w, const char **error_r)
{
	DBT bv;
	void *p, *kp = NULL, *vp = NULL, *lk = NULL, *lv = NULL;
	size_t kl = 0, vl = 0, lkl = 0, lvl = 0;
	int r;

	memset(&bv, 0, sizeof(bv));
	bv.data = w->bulk.data;
	bv.size = (u_int32_t)w->bulk_len;
	bv.ulen = w->bulk_ulen;
	DB_MULTIPLE_INIT(p, &bv);
	for (;;) {
		DB_MULTIPLE_KEY_NEXT(p, &bv, kp, kl, vp, vl);
		if (p == NULL)
			break;
		if (w->plen > 0 && (kl < w->plen ||
				    memcmp(kp, w->prefix, w->plen) != 0)) {
			w->done = true;
			break;
		}
		lk = kp;
		lkl = kl;
		lv = vp;
		lvl = vl;
		if (w->fn == NULL) {
			w->count++;
			continue;
		}
		r = w->fn(kp, kl, vp, vl, w->ctx);
		if (r < 0) {
			const char *t = q_err_last();

			if (error_r != NULL)
				*error_r = t;
			return -1;
		}
		if (r > 0) {
			w->done = true;
			return 1;
		}
	}
	if (lk == NULL) {
		w->done = true;
		return 1;
	}
	q_buf_reset(&w->lastk);
	q_buf_reset(&w->lastv);
	if (q_buf_add(&w->lastk, lk, lkl) < 0 ||
	    q_buf_add(&w->lastv, lv, lvl) < 0)
		return q_err(error_r, "%s", strerror(ENOMEM));
	w->started = true;
	return w->done ? 1 : 0;
}

static int walk(struct q_hints *h, enum q_db db, struct walk *w,
		const char **error_r)
{
	int ret = 0, rc;

	if (q_buf_reserve(&w->bulk, Q_HINTS_BULK) < 0) {
		ret = q_err(error_r, "%s", strerror(ENOMEM));
		goto out;
	}
	while (!w->done) {
		rc = hints_run(h, db, "walk", w->started ? w->lastk.data : NULL,
			       w->lastk.len, RUN_READ, op_chunk, w, error_r);
		if (rc == Q_NOTFOUND)
			break;
		if (rc < 0) {
			ret = -1;
			break;
		}
		if ((rc = walk_chunk(w, error_r)) < 0) {
			ret = -1;
			break;
		}
		if (rc > 0)
			break;
	}
out:
	q_buf_free(&w->bulk);
	q_buf_free(&w->lastk);
	q_buf_free(&w->lastv);
	q_buf_free(&w->sk);
	q_buf_free(&w->sv);
	return ret;
}

int q_hints_iter(struct q_hints *h, enum q_db db, const void *prefix,
		 size_t plen, q_hints_iter_fn *fn, void *ctx,
		 const char **error_r)
{
	struct walk w = { .prefix = prefix, .plen = prefix != NULL ? plen : 0,
			  .fn = fn, .ctx = ctx };

	return walk(h, db, &w, error_r);
}

/* ---- count, truncate ---- */

static int op_stat(struct op *op, void *varg)
{
	DB_BTREE_STAT *st;
	size_t *n = varg;
	int rc;

	rc = op->db->stat(op->db, NULL, &st, DB_FAST_STAT);
	if (rc == 0) {
		*n = st->bt_nkeys;
		free(st);
	}
	return rc;
}

int q_hints_count(struct q_hints *h, enum q_db db, size_t *count_r,
		  const char **error_r)
{
	struct walk w = { .fn = NULL };
	int ret;

	*count_r = 0;
	if ((int)db < 0 || db >= Q_DB__COUNT)
		return q_err(error_r, "hints: no database number %d", (int)db);
	if (!h->db[db]->dup)    /* record numbers: exact and O(1) */
		return hints_run(h, db, "count", NULL, 0, RUN_READ, op_stat,
				 count_r, error_r);
	ret = walk(h, db, &w, error_r);
	if (ret == 0)
		*count_r = w.count;
	return ret;
}

static int op_truncate(struct op *op, void *varg)
{
	u_int32_t n = 0;

	(void)varg;
	return op->db->truncate(op->db, NULL, &n, 0);
}

int q_hints_truncate(struct q_hints *h, enum q_db db, const char **error_r)
{
	/* Exclusive: DB->truncate refuses while this process has a cursor
	 * open on the handle. */
	return hints_run(h, db, "truncate", NULL, 0, RUN_EXCL, op_truncate,
			 NULL, error_r) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* wait lists */

static int wait_check(const char *host, const char *id, const char **error_r)
{
	if (host == NULL || *host == '\0' || strlen(host) > 1024)
		return q_err(error_r, "wait list: bad host name");
	if (id != NULL && (*id == '\0' || strlen(id) > 1024))
		return q_err(error_r, "wait list: bad message id");
	return 0;
}

int q_wait_add(struct q_hints *h, const char *host, const char *id,
	       const char **error_r)
{
	if (wait_check(host, id, error_r) < 0)
		return -1;
	return q_hints_put(h, Q_DB_WAIT, host, strlen(host), id, strlen(id),
			   error_r);
}

struct wdel_arg {
	const char *host, *id;
};

static int op_wait_del(struct op *op, void *varg)
{
	struct wdel_arg *a = varg;
	DB_TXN *txn;
	DBC *c;
	DBT k, v;
	int rc;

	if ((rc = op->env->txn_begin(op->env, NULL, &txn, 0)) != 0)
		return rc;
	if ((rc = op->db->cursor(op->db, txn, &c, 0)) != 0) {
		(void)txn->abort(txn);
		return rc;
	}
	dbt_in(&k, a->host, strlen(a->host));
	dbt_in(&v, a->id, strlen(a->id));
	rc = c->get(c, &k, &v, DB_GET_BOTH | DB_RMW);
	if (rc == 0)
		rc = c->del(c, 0);
	(void)c->close(c);
	if (rc != 0) {
		(void)txn->abort(txn);
		return rc;
	}
	return txn->commit(txn, 0);
}

int q_wait_del(struct q_hints *h, const char *host, const char *id,
	       const char **error_r)
{
	struct wdel_arg a = { host, id };

	if (wait_check(host, id, error_r) < 0)
		return -1;
	return hints_run(h, Q_DB_WAIT, "delete", host, strlen(host), RUN_WRITE,
			 op_wait_del, &a, error_r);
}

struct wlist_arg {
	const char *host;
	size_t max;
	char **ids;
	size_t n, cap;
	struct q_buf bulk;
};

static void wlist_drop(struct wlist_arg *a)
{
	size_t i;

	for (i = 0; i < a->n; i++)
		free(a->ids[i]);
	free(a->ids);
	a->ids = NULL;
	a->n = a->cap = 0;
}

static int op_wait_list(struct op *op, void *varg)
{
	struct wlist_arg *a = varg;
	u_int32_t flag = DB_SET;
	DBC *c;
	DBT k, v;
	int rc;

	wlist_drop(a);   /* a retry starts over */
	if ((rc = op->db->cursor(op->db, NULL, &c, 0)) != 0)
		return rc;
	for (;;) {
		void *p, *dp;
		size_t dl;

		dbt_in(&k, a->host, strlen(a->host));
		memset(&v, 0, sizeof(v));
		v.data = a->bulk.data;
		v.ulen = bulk_ulen(&a->bulk);
		v.flags = DB_DBT_USERMEM;
		rc = c->get(c, &k, &v, flag | DB_MULTIPLE);
		if (rc == DB_BUFFER_SMALL) {
			if (q_buf_reserve(&a->bulk, a->bulk.cap * 2 + v.size) < 0) {
				rc = HINTS_ENOMEM;
				break;
			}
			continue;
		}
		if (rc != 0)
			break;
		DB_MULTIPLE_INIT(p, &v);
		for (;;) {
			char *s;

			DB_MULTIPLE_NEXT(p, &v, dp, dl);
			if (p == NULL)
				break;
			if (a->max > 0 && a->n >= a->max)
				break;
			if (a->n + 2 > a->cap) {
				size_t ncap = a->cap < 16 ? 16 : a->cap * 2;
				char **nv = realloc(a->ids, ncap * sizeof(*nv));

				if (nv == NULL) {
					rc = HINTS_ENOMEM;
					goto out;
				}
				a->ids = nv;
				a->cap = ncap;
			}
			if ((s = malloc(dl + 1)) == NULL) {
				rc = HINTS_ENOMEM;
				goto out;
			}
			memcpy(s, dp, dl);
			s[dl] = '\0';
			a->ids[a->n++] = s;
			a->ids[a->n] = NULL;
		}
		if (a->max > 0 && a->n >= a->max)
			break;
		flag = DB_NEXT_DUP;
	}
	if (rc == DB_NOTFOUND)
		rc = 0;
out:
	(void)c->close(c);
	return rc;
}

int q_wait_list(struct q_hints *h, const char *host, size_t max,
		char ***ids_r, size_t *n_r, const char **error_r)
{
	struct wlist_arg a = { .host = host, .max = max };
	char **nv;
	size_t i;
	int ret;

	if (wait_check(host, NULL, error_r) < 0)
		return -1;
	if (q_buf_reserve(&a.bulk, 64 << 10) < 0)
		return q_err(error_r, "%s", strerror(ENOMEM));
	ret = hints_run(h, Q_DB_WAIT, "list", host, strlen(host), RUN_READ,
			op_wait_list, &a, error_r);
	q_buf_free(&a.bulk);
	if (ret < 0) {
		wlist_drop(&a);
		return -1;
	}
	if (a.n == 0) {
		free(a.ids);
		return 0;
	}
	nv = realloc(*ids_r, (*n_r + a.n + 1) * sizeof(*nv));
	if (nv == NULL) {
		wlist_drop(&a);
		return q_err(error_r, "%s", strerror(ENOMEM));
	}
	for (i = 0; i < a.n; i++)
		nv[*n_r + i] = a.ids[i];
	nv[*n_r + a.n] = NULL;
	*ids_r = nv;
	*n_r += a.n;
	free(a.ids);
	return 0;
}

/* ------------------------------------------------------------------ */
/* record codec */

int q_rec_put_u8(struct q_buf *b, uint8_t v)
{
	return q_buf_add(b, &v, 1);
}

int q_rec_put_u32(struct q_buf *b, uint32_t v)
{
	unsigned char p[4];
	int i;

	for (i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
	return q_buf_add(b, p, sizeof(p));
}

int q_rec_put_u64(struct q_buf *b, uint64_t v)
{
	unsigned char p[8];
	int i;

	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
	return q_buf_add(b, p, sizeof(p));
}

int q_rec_put_str(struct q_buf *b, const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	size_t len0 = b->len;

	if (n > Q_REC_STR_MAX) {
		errno = E2BIG;
		return -1;
	}
	if (q_rec_put_u32(b, (uint32_t)n) < 0)
		return -1;
	if (q_buf_add(b, s != NULL ? s : "", n) < 0) {
		b->len = len0;
		if (b->data != NULL)
			b->data[len0] = '\0';
		return -1;
	}
	return 0;
}

void q_rec_reader_init(struct q_rec_reader *r, const void *p, size_t n)
{
	r->p = p;
	r->left = p != NULL ? n : 0;
	r->bad = false;
}

static const unsigned char *rec_take(struct q_rec_reader *r, size_t n)
{
	const unsigned char *p;

	if (r->bad || r->left < n) {
		r->bad = true;
		r->left = 0;
		return NULL;
	}
	p = r->p;
	r->p += n;
	r->left -= n;
	return p;
}

uint8_t q_rec_get_u8(struct q_rec_reader *r)
{
	const unsigned char *p = rec_take(r, 1);

	return p != NULL ? p[0] : 0;
}

uint32_t q_rec_get_u32(struct q_rec_reader *r)
{
	const unsigned char *p = rec_take(r, 4);
	uint32_t v = 0;
	int i;

	if (p == NULL)
		return 0;
	for (i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

uint64_t q_rec_get_u64(struct q_rec_reader *r)
{
	const unsigned char *p = rec_take(r, 8);
	uint64_t v = 0;
	int i;

	if (p == NULL)
		return 0;
	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

char *q_rec_get_str(struct q_rec_reader *r)
{
	const unsigned char *p;
	uint32_t n;
	char *s;

	n = q_rec_get_u32(r);
	if (r->bad)
		return NULL;
	if (n > Q_REC_STR_MAX || n > r->left) {
		r->bad = true;
		r->left = 0;
		return NULL;
	}
	p = rec_take(r, n);
	if (p == NULL)
		return NULL;
	/* A record string never holds a NUL: it would cut the C string. */
	if (n > 0 && memchr(p, '\0', n) != NULL) {
		r->bad = true;
		r->left = 0;
		return NULL;
	}
	if ((s = malloc((size_t)n + 1)) == NULL) {
		r->bad = true;
		return NULL;
	}
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}
