/*
 * tui/qtop.h - what the parts of qtop share.
 *
 *   qtop.c        main(), options, the ncurses loop, the summary and tab
 *                 lines, the status line, prompts, help, panel dispatch
 *   data.c        the fetcher thread: snapshots of the queue index, the
 *                 retry records, the live sessions and the main log
 *   jobs.c        the worker threads: freeze/thaw/remove/retry actions
 *                 through libq, and "deliver now" (qrun -M in the
 *                 background)
 *   text.c        escaping for the screen, display widths, column layout,
 *                 string sets (marks)
 *   view_queue.c  the Queue panel and its per-domain summary
 *   view_retry.c  the Retry panel
 *   view_sess.c   the Sessions panel
 *   view_msg.c    the message pager (envelope, recipients, headers, log,
 *                 body)
 *
 * Threads: only the main thread calls ncurses. The fetcher and the two
 * workers each open their own q_spool handle (a handle is not
 * thread-safe); the hints environment under it is shared process-wide
 * by libq. Snapshots are immutable once published and reference-counted
 * (atomic counts), so the main thread reads them without locking.
 */
#ifndef QTOP_H
#define QTOP_H

#include "q/common.h"
#include "q/util.h"
#include "q/spool.h"
#include "q/hints.h"
#include "q/retry.h"

#include <stdatomic.h>
#include <stdio.h>

/* ------------------------------------------------------------------ */
/* snapshots (data.c) */

/* One message, from the queue index. The strings live in the snapshot's
 * arena, one after the other (sender, rcpt1, domains, rcpts), never NULL;
 * they are raw bytes from mail: escape before display. */
struct qrow {
	char id[Q_ID_LEN + 1];
	unsigned flags;               /* Q_ENV_* */
	uint32_t nrcpt, npending;
	time_t arrival;
	time_t next_try;              /* 0 = due now (never deferred) */
	uint64_t size;
	const char *sender, *rcpt1, *domains, *rcpts;
	uint64_t vhash;               /* hash of the raw index value */
	uint32_t vlen;                /* its length; 0 = unknown */
};

struct arena;

/* The queue, in id (= arrival) order. */
struct qsnap {
	atomic_uint refs;
	struct qrow *rows;
	size_t n;
	struct arena *arena;
	size_t frozen, deferred;
	uint64_t bytes;
	time_t oldest;                /* arrival of the oldest, 0 if empty */
	unsigned gen;                 /* grows with every new qsnap */
	bool checked;                 /* built by a cross-check (q_spool_list) */
	size_t decoded;               /* rows decoded (not copied) for it */
	size_t bad;                   /* records that did not decode */
};

struct rrow {
	char *key;                    /* raw bytes of the key, NUL-terminated */
	char type;                    /* 'T' host, 'R' routing, 'A' address */
	char *host, *ip;              /* parsed from T: keys (else NULL) */
	unsigned port;                /* 0 = default */
	char *msgid;                  /* A keys: the message, else NULL */
	struct q_retry_rec rec;
};

struct rsnap {
	atomic_uint refs;
	struct rrow *rows;
	size_t n;
	unsigned gen;
	size_t bad;
};

/* Everything one refresh saw. */
struct snap {
	atomic_uint refs;
	time_t taken;
	struct qsnap *q;
	struct rsnap *r;              /* NULL until the retry db was read */
	struct q_session_rec *sess;
	size_t nsess;
	/* main log, the last 60 seconds */
	unsigned log_delivered, log_failed, log_deferred;
	bool log_ok;                  /* the main log could be read */
	/* messages waiting for the retry key asked by data_want_wait() */
	char *wait_key;               /* NULL when none was asked */
	char **wait_ids;              /* sorted, only ids on the queue */
	size_t nwait;
	char err[256];                /* last fetch error, "" if none */
};

struct fetch;

/* Synchronous use (--once, --bench-refresh): one fetcher in this thread. */
int fetch_new(const char *spool_dir, struct fetch **f_r, const char **error_r);
void fetch_free(struct fetch **f);
/* One refresh. mode: FETCH_AUTO (walk only when the spool changed),
 * FETCH_WALK (always walk the index), FETCH_CHECK (q_spool_list: the
 * index checked against the spool). Returns a new snapshot (refs 1). */
enum fetch_mode { FETCH_AUTO, FETCH_WALK, FETCH_CHECK };
struct snap *fetch_run(struct fetch *f, enum fetch_mode mode, bool retry,
		       const char *wait_key);
void snap_unref(struct snap **s);

/* The fetcher thread. */
int data_start(const char *spool_dir, const char **error_r);
void data_stop(void);
/* The newest snapshot: returns cur if nothing newer was published (NULL
 * before the first), else the new one (and releases cur). */
struct snap *data_get(struct snap *cur);
/* Ask for a refresh now: walk the index (and cross-check when check). */
void data_poke(bool check);
/* Which extras the next refreshes fetch. */
void data_want_retry(bool on);
void data_want_wait(const char *key);      /* NULL = none */

/* id present in the queue snapshot? (binary search) */
const struct qrow *qsnap_find(const struct qsnap *q, const char *id);

/* Parse a retry key into r (type, host, ip, port, msgid). */
void rrow_parse_key(struct rrow *r);

/* ------------------------------------------------------------------ */
/* jobs (jobs.c) */

enum job_kind {
	JOB_FREEZE,
	JOB_THAW,
	JOB_REMOVE,
	JOB_RETRY_NOW,       /* items are retry keys: clear, make waiting due */
	JOB_RETRY_DELETE,    /* items are retry keys: clear only */
	JOB_DELIVER,         /* items are message ids: qrun -M */
	JOB_DELIVER_KEYS,    /* items are retry keys: their waiting messages */
};

int jobs_start(const char *spool_dir, const char *conf_file,
	       const char *qtop_path, const char **error_r);
void jobs_stop(void);
/* Takes ownership of items (malloc'd array of malloc'd strings). */
void jobs_submit(enum job_kind kind, char **items, size_t n);
/* Progress of running or queued jobs for the status line; false if idle. */
bool jobs_progress(const struct qsnap *q, char *buf, size_t size);
/* A finished job's result (each once); false if none. */
bool jobs_result(char *buf, size_t size, bool *error_r);
/* Is id part of the running or queued deliver-now work? */
bool jobs_delivering(const char *id);
/* The qrun that "deliver now" runs (for the help screen). */
const char *jobs_qrun_path(void);

/* ------------------------------------------------------------------ */
/* text and layout (text.c) */

void tx_setup(bool utf8);
bool tx_utf8(void);
/* Append raw bytes escaped for the screen: q_escape_term, then every
 * character the terminal would not show with a width (wcwidth <= 0) as
 * \xHH bytes too. Exits on ENOMEM (as the cli helpers do). */
void tx_escape(struct q_buf *b, const char *s, size_t n);
/* Display width of escaped text. */
int tx_width(const char *s, size_t n);
/* How many bytes of escaped text s fit in width columns (*cols_r gets
 * their width). Never splits a character. */
size_t tx_fit(const char *s, size_t n, int width, int *cols_r);
/* Draw escaped text at y,x in exactly width columns (cut or padded). */
void tx_put(int y, int x, int width, const char *esc);
/* Escape raw bytes, then tx_put. */
void tx_put_raw(int y, int x, int width, const char *raw);
/* Our own ASCII text, cut or padded (right-aligned when right). */
void tx_put_str(int y, int x, int width, const char *s, bool right);

/* Columns of a list: min width, max width, drop priority (a higher
 * number is dropped first when the screen is narrow). */
struct col {
	const char *title;
	int min, max;
	int prio;
	bool right;
	int x, w;                     /* layout result; w == 0: not shown */
	bool first;                   /* takes room up to max before the
					 others grow (round robin) */
};
void cols_layout(struct col *c, int n, int width);
/* "in 40s", "in 14m", "in 3h", "in 2d" (view_queue.c) */
const char *short_in(long long secs, char *buf, size_t size);
void cols_header(const struct col *c, int n, int y, int width);

/* A set of strings (marks). */
struct sset {
	char **slot;
	size_t cap, n;
};
bool sset_has(const struct sset *s, const char *k);
void sset_add(struct sset *s, const char *k);
bool sset_del(struct sset *s, const char *k);
void sset_clear(struct sset *s);
/* Every member, malloc'd copies (caller frees with q_strv_free). */
char **sset_list(const struct sset *s, size_t *n_r);

_Noreturn void qtop_oom(void);

/* ------------------------------------------------------------------ */
/* the application (qtop.c) */

/* Key handlers return these flags. */
#define K_HANDLED 0x01
#define K_REDRAW  0x02
#define K_QUIT    0x04

struct panel {
	const char *name;
	/* a new snapshot is in app.snap (called also when the same data
	   must be re-sorted or re-filtered) */
	void (*data)(void);
	/* draw the rows y0 .. y0+h-1, width w */
	void (*draw)(int y0, int h, int w);
	int (*key)(int ch);
	/* one line of key hints for the bottom line */
	const char *(*hints)(void);
	/* the tab label, e.g. "Queue 1234" */
	void (*label)(char *buf, size_t size);
	/* extra text for the tab line (sort, filter, marks), may be NULL */
	void (*info)(char *buf, size_t size);
};

extern const struct panel queue_panel, retry_panel, sess_panel;
/* rebuild the queue list of s filtered and sorted by sort (0 age, 1 size,
 * 2 sender, 3 domain), for --bench-refresh */
void queue_bench(struct snap *s, int sort, const char *filter);

/* colour pairs / attributes (plain attributes when colours are off) */
enum ui_attr {
	UA_NORMAL, UA_TITLE, UA_HEADER, UA_CURSOR, UA_MARK, UA_FROZEN,
	UA_SENDING, UA_DEFER, UA_ERROR, UA_OK, UA_DIM, UA_TAB, UA_TABSEL,
	UA_SECTION, UA__N
};
int ui_attr(enum ui_attr a);

struct app {
	struct snap *snap;            /* the snapshot being shown */
	time_t now;
	bool colors;
	bool quit;
	int view;                     /* 0 queue, 1 retry, 2 sessions */
	bool msgview;                 /* the message pager is open */
	const char *conf_file;
	const char *spool_dir;
};
extern struct app app;

/* status line */
void ui_status(bool error, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* ask y/n; yes(arg) runs on 'y' (arg freed with free_arg either way) */
void ui_confirm(const char *question, void (*yes)(void *arg), void *arg,
		void (*free_arg)(void *arg));
/* line input: changed(text, state) after every edit; state 0 editing,
 * 1 Enter, -1 Esc */
void ui_input(const char *label, const char *init,
	      void (*changed)(const char *text, int state));
/* list navigation shared by the panels: returns true when ch moved the
 * cursor (Up, Down, PgUp, PgDn, Home, End, j, k, g, G) */
bool ui_nav(int ch, size_t n, size_t *cur, int page);
/* keep cur visible in rows top .. top+h-1 */
void ui_scroll(size_t cur, size_t n, int h, size_t *top);
/* height of the list area of the last draw */
int ui_list_height(void);

/* message pager (view_msg.c) */
void msg_open(const char *id);
void msg_close(void);
void msg_draw(int y0, int h, int w);
int msg_key(int ch);
const char *msg_hints(void);
void msg_label(char *buf, size_t size);

/* actions shared by the queue and message views */
void act_messages(enum job_kind kind, char **ids, size_t n);

#endif
