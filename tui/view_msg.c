/*
 * tui/view_msg.c - the message pager: the envelope (sender, arrival,
 * size, state, next try), every recipient with its state, tries and last
 * error, the header, the message log and the body, paged.
 *
 * Reads one message without its lock (q_spool_read: -H with the journal
 * applied), its -D (at most BODY_MAX bytes, dot-stuffing undone) and its
 * msglog (the last LOG_MAX bytes), on the main thread when the pager
 * opens: bounded work (a few MiB at most). Every line is escaped once
 * when loaded (tx_escape; tabs expanded first) and wrapped to the width
 * when drawn (re-wrapped after a resize).
 *
 * The pager follows the snapshots: when the message's index record
 * changes (frozen, thawed, tried) it is read again; when the message
 * leaves the queue, a line says so.
 */
#include "config.h"
#include "tui/qtop.h"
#include "bin/cli.h"
#include "q/addr.h"

#include <curses.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BODY_MAX (1u << 20)
#define LOG_MAX  (256u << 10)

enum { SEC_ENV, SEC_HDR, SEC_LOG, SEC_BODY, SEC__N };

struct line {
	size_t off, len;
	int attr;
};

static struct {
	char id[Q_ID_LEN + 1];
	struct q_buf text;            /* escaped logical lines */
	struct line *ll;
	size_t nll, capll;
	struct line *wl;              /* wrapped to wrap_w */
	size_t nwl, capwl;
	int wrap_w;
	size_t top;
	size_t sec[SEC__N];           /* first logical line of each section */
	uint64_t vhash;               /* index record seen at load */
	bool have_row;
	int page, rows;
} M;

static struct q_buf rawbuf;

static void add_line(int attr, const char *s, size_t n)
{
	if (M.nll == M.capll) {
		size_t ncap = M.capll != 0 ? M.capll * 2 : 256;
		struct line *v = realloc(M.ll, ncap * sizeof(*v));

		if (v == NULL)
			qtop_oom();
		M.ll = v;
		M.capll = ncap;
	}
	M.ll[M.nll].off = M.text.len;
	tx_escape(&M.text, s, n);
	M.ll[M.nll].len = M.text.len - M.ll[M.nll].off;
	M.ll[M.nll].attr = attr;
	M.nll++;
}

static void blank(void)
{
	add_line(A_NORMAL, "", 0);
}

static void addf(int attr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void addf(int attr, const char *fmt, ...)
{
	va_list ap;
	char small[1024];
	int n;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(small)) {
		add_line(attr, small, (size_t)n);
		return;
	}
	q_buf_reset(&rawbuf);
	if (q_buf_reserve(&rawbuf, (size_t)n + 1) < 0)
		qtop_oom();
	va_start(ap, fmt);
	vsnprintf(rawbuf.data, (size_t)n + 1, fmt, ap);
	va_end(ap);
	add_line(attr, rawbuf.data, (size_t)n);
}

/* Text lines (LF or CRLF), tabs expanded. */
static void add_text(const char *s, size_t n, int attr)
{
	size_t i = 0;

	while (i < n) {
		const char *nl = memchr(s + i, '\n', n - i);
		size_t end = nl != NULL ? (size_t)(nl - s) : n, e = end;

		if (e > i && s[e - 1] == '\r')
			e--;
		q_buf_reset(&rawbuf);
		for (size_t k = i; k < e; k++) {
			if (s[k] == '\t') {
				do {
					if (q_buf_addc(&rawbuf, ' ') < 0)
						qtop_oom();
				} while (rawbuf.len % 8 != 0);
			} else if (q_buf_addc(&rawbuf, s[k]) < 0) {
				qtop_oom();
			}
		}
		add_line(attr, rawbuf.data != NULL ? rawbuf.data : "", rawbuf.len);
		i = end + 1;
	}
}

/* Read at most max bytes of path; from the end when tail. -1 with errno. */
static int read_file(const char *path, size_t max, bool tail, struct q_buf *b,
		     size_t *total_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	off_t off = 0;
	size_t want;

	if (fd < 0)
		return -1;
	if (fstat(fd, &sb) < 0) {
		close(fd);
		return -1;
	}
	*total_r = (size_t)sb.st_size;
	want = (size_t)sb.st_size < max ? (size_t)sb.st_size : max;
	if (tail && (size_t)sb.st_size > max)
		off = sb.st_size - (off_t)max;
	if (q_buf_reserve(b, want + 1) < 0) {
		close(fd);
		errno = ENOMEM;
		return -1;
	}
	while (b->len < want) {
		ssize_t r = pread(fd, b->data + b->len, want - b->len, off + (off_t)b->len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		b->len += (size_t)r;
	}
	b->data[b->len] = '\0';
	close(fd);
	return 0;
}

static void load(void)
{
	struct q_spool *sp = cli_spool(false);
	struct q_hints *h = cli_hints();
	struct q_env *env = NULL;
	struct q_index_rec ir;
	const char *err = NULL;
	char path[4200], t[32], a[32], s[32];
	size_t np = 0, nd = 0, nf = 0, total = 0;
	struct q_buf data = { 0 }, plain = { 0 };
	const struct qrow *row;
	int rc;

	q_buf_reset(&M.text);
	M.nll = 0;
	M.wrap_w = 0;
	memset(M.sec, 0, sizeof(M.sec));
	row = app.snap != NULL ? qsnap_find(app.snap->q, M.id) : NULL;
	M.have_row = row != NULL;
	M.vhash = row != NULL ? row->vhash : 0;

	M.sec[SEC_ENV] = M.nll;
	addf(ui_attr(UA_SECTION), "Envelope");
	rc = q_spool_read(sp, M.id, &env, &err);
	if (rc == Q_NOTFOUND) {
		addf(ui_attr(UA_ERROR), "%s: no longer on the queue (delivered or removed)",
		     M.id);
		M.sec[SEC_HDR] = M.sec[SEC_LOG] = M.sec[SEC_BODY] = M.nll;
		return;
	}
	if (rc < 0) {
		addf(ui_attr(UA_ERROR), "%s: %s", M.id, err != NULL ? err : "cannot be read");
		M.sec[SEC_HDR] = M.sec[SEC_LOG] = M.sec[SEC_BODY] = M.nll;
		return;
	}
	memset(&ir, 0, sizeof(ir));
	addf(A_NORMAL, "Message     %s", env->id);
	addf(A_NORMAL, "Sender      <%s>", env->sender != NULL ? env->sender : "");
	addf(A_NORMAL, "Arrival     %s (%s ago)", q_time_stamp(env->arrival, t, sizeof(t)),
	     q_time_format((long long)(app.now - env->arrival), a, sizeof(a)));
	addf(A_NORMAL, "Size        %s (%llu bytes)", cli_fmt_size(env->size, s, sizeof(s)),
	     (unsigned long long)env->size);
	for (size_t i = 0; app.snap != NULL && i < app.snap->nsess; i++) {
		const struct q_session_rec *r = &app.snap->sess[i];

		if (r->msgid != NULL && strcmp(r->msgid, M.id) == 0)
			addf(ui_attr(UA_SENDING), "Delivering  now: pid %ld to %s [%s], state %s",
			     r->pid, r->host != NULL ? r->host : "-", r->ip != NULL ? r->ip : "-",
			     r->state != NULL ? r->state : "-");
	}
	if (env->flags & Q_ENV_FROZEN)
		addf(ui_attr(UA_FROZEN), "State       *** frozen ***%s%s%s",
		     env->frozen_reason != NULL ? " (" : "",
		     env->frozen_reason != NULL ? env->frozen_reason : "",
		     env->frozen_reason != NULL ? ")" : "");
	else
		addf(A_NORMAL, "State       active");
	if (env->flags & Q_ENV_BOUNCE)
		addf(A_NORMAL, "Bounce      yes (a delivery status notification)");
	if (q_index_get(h, M.id, &ir, NULL) == 0) {
		if (ir.next_try == 0 || ir.next_try <= app.now)
			addf(A_NORMAL, "Next try    due now");
		else
			addf(A_NORMAL, "Next try    %s (in %s)", q_time_stamp(ir.next_try, t, sizeof(t)),
			     q_time_format((long long)(ir.next_try - app.now), a, sizeof(a)));
	}
	q_index_rec_clear(&ir);
	for (size_t i = 0; i < env->nrcpt; i++) {
		switch (env->rcpt[i].state) {
		case 'D': nd++; break;
		case 'F': nf++; break;
		default: np++; break;
		}
	}
	blank();
	addf(ui_attr(UA_SECTION), "Recipients: %zu (%zu pending, %zu delivered, %zu failed)",
	     env->nrcpt, np, nd, nf);
	for (size_t i = 0; i < env->nrcpt; i++) {
		const struct q_rcpt *r = &env->rcpt[i];
		int at = r->state == 'D' ? ui_attr(UA_OK) : r->state == 'F' ? ui_attr(UA_ERROR)
			 : (int)A_NORMAL;
		struct q_buf l = { 0 };

		addf(at, "  %-9s <%s>", cli_state_name(r->state), r->addr);
		q_buf_printf(&l, "            tries %u", r->tries);
		if (r->last_time != 0)
			q_buf_printf(&l, ", last %s", q_time_stamp(r->last_time, t, sizeof(t)));
		if (r->last_code != 0)
			q_buf_printf(&l, ", code %d", r->last_code);
		if (r->host != NULL && r->host[0] != '\0')
			q_buf_printf(&l, ", host %s", r->host);
		add_line(ui_attr(UA_DIM), l.data, l.len);
		q_buf_free(&l);
		if (r->last_error != NULL && r->last_error[0] != '\0')
			addf(r->state == 'F' ? ui_attr(UA_ERROR) : ui_attr(UA_DEFER),
			     "            last error: %s", r->last_error);
	}

	/* header and body from -D */
	q_spool_path(sp, M.id, 'D', path, sizeof(path));
	if (read_file(path, BODY_MAX, false, &data, &total) < 0) {
		blank();
		M.sec[SEC_HDR] = M.nll;
		addf(ui_attr(UA_SECTION), "Header");
		addf(ui_attr(UA_ERROR), "%s: %s", path, strerror(errno));
	} else {
		const char *p, *sep;
		size_t hlen, boff;

		if (q_msg_unstuff(data.data, data.len, &plain) < 0)
			qtop_oom();
		p = plain.data != NULL ? plain.data : "";
		if (plain.len >= 2 && p[0] == '\r' && p[1] == '\n') {
			hlen = 0;
			boff = 2;
		} else if ((sep = memmem(p, plain.len, "\r\n\r\n", 4)) != NULL) {
			hlen = (size_t)(sep - p) + 2;
			boff = hlen + 2;
		} else {
			hlen = plain.len;
			boff = plain.len;
		}
		blank();
		M.sec[SEC_HDR] = M.nll;
		addf(ui_attr(UA_SECTION), "Header");
		add_text(p, hlen, A_NORMAL);
		blank();
		M.sec[SEC_LOG] = M.nll;
		addf(ui_attr(UA_SECTION), "Message log");
		{
			struct q_buf lg = { 0 };
			size_t lt = 0;

			q_spool_path(sp, M.id, 'L', path, sizeof(path));
			if (read_file(path, LOG_MAX, true, &lg, &lt) < 0)
				addf(ui_attr(UA_DIM), errno == ENOENT ? "(no message log yet)"
				     : "(the message log cannot be read)");
			else {
				if (lt > LOG_MAX)
					addf(ui_attr(UA_DIM), "[... the first %zu bytes are not shown]",
					     lt - LOG_MAX);
				add_text(lg.data, lg.len, A_NORMAL);
			}
			q_buf_free(&lg);
		}
		blank();
		M.sec[SEC_BODY] = M.nll;
		addf(ui_attr(UA_SECTION), "Body (%zu bytes)", boff <= plain.len ? plain.len - boff : 0);
		if (boff < plain.len)
			add_text(p + boff, plain.len - boff, A_NORMAL);
		if (total > BODY_MAX)
			addf(ui_attr(UA_DIM), "[... %zu more bytes of data not shown]",
			     total - BODY_MAX);
	}
	if (M.sec[SEC_LOG] == 0)
		M.sec[SEC_LOG] = M.sec[SEC_BODY] = M.nll;
	q_buf_free(&data);
	q_buf_free(&plain);
	q_env_free(&env);
}

static void wrap(int w)
{
	M.nwl = 0;
	for (size_t i = 0; i < M.nll; i++) {
		size_t off = M.ll[i].off, left = M.ll[i].len;

		do {
			int used;
			size_t fit = tx_fit(M.text.data + off, left, w, &used);

			if (fit == 0 && left > 0)
				fit = 1;         /* cannot happen with w >= 2 */
			if (M.nwl == M.capwl) {
				size_t ncap = M.capwl != 0 ? M.capwl * 2 : 256;
				struct line *v = realloc(M.wl, ncap * sizeof(*v));

				if (v == NULL)
					qtop_oom();
				M.wl = v;
				M.capwl = ncap;
			}
			M.wl[M.nwl].off = off;
			M.wl[M.nwl].len = fit;
			M.wl[M.nwl].attr = M.ll[i].attr;
			M.nwl++;
			off += fit;
			left -= fit;
		} while (left > 0);
	}
	M.wrap_w = w;
}

/* the first wrapped line of logical line k */
static size_t wline_of(size_t k)
{
	for (size_t i = 0; i < M.nwl; i++)
		if (M.wl[i].off >= (k < M.nll ? M.ll[k].off : M.text.len))
			return i;
	return M.nwl > 0 ? M.nwl - 1 : 0;
}

void msg_open(const char *id)
{
	snprintf(M.id, sizeof(M.id), "%s", id);
	M.top = 0;
	app.msgview = true;
	load();
}

void msg_close(void)
{
	app.msgview = false;
	q_buf_free(&M.text);
	free(M.ll);
	free(M.wl);
	M.ll = M.wl = NULL;
	M.nll = M.capll = M.nwl = M.capwl = 0;
	q_buf_free(&rawbuf);
}

void msg_draw(int y0, int h, int w)
{
	const struct qrow *row = app.snap != NULL ? qsnap_find(app.snap->q, M.id) : NULL;
	int rows = h;

	/* follow the message: read it again when its index record changed */
	if (row != NULL && (!M.have_row || row->vhash != M.vhash)) {
		size_t keep = M.top;

		load();
		M.top = keep;
	}
	if (M.wrap_w != w - 1)
		wrap(w - 1 > 10 ? w - 1 : 10);
	if (row == NULL && app.snap != NULL && app.snap->q != NULL) {
		attrset(ui_attr(UA_ERROR));
		tx_put_str(y0, 0, w, " This message is no longer on the queue "
			   "(delivered or removed).", false);
		attrset(A_NORMAL);
		y0++;
		rows--;
	}
	M.page = rows > 1 ? rows - 1 : 1;
	M.rows = rows;
	if (M.nwl > (size_t)rows && M.top > M.nwl - (size_t)rows)
		M.top = M.nwl - (size_t)rows;
	if (M.nwl <= (size_t)rows)
		M.top = 0;
	for (int i = 0; i < rows; i++) {
		size_t k = M.top + (size_t)i;
		char one[4096];
		size_t n;

		move(y0 + i, 0);
		clrtoeol();
		if (k >= M.nwl)
			continue;
		n = M.wl[k].len < sizeof(one) - 1 ? M.wl[k].len : sizeof(one) - 1;
		memcpy(one, M.text.data + M.wl[k].off, n);
		one[n] = '\0';
		attrset(M.wl[k].attr);
		tx_put(y0 + i, 1, w - 1, one);
		attrset(A_NORMAL);
	}
}

int msg_key(int ch)
{
	size_t last = M.nwl > 0 ? M.nwl - 1 : 0;
	char **ids;

	switch (ch) {
	case KEY_DOWN: case 'j': case '\r': case '\n':
		if (M.top < last)
			M.top++;
		return K_HANDLED;
	case KEY_UP: case 'k':
		if (M.top > 0)
			M.top--;
		return K_HANDLED;
	case ' ': case KEY_NPAGE:
		M.top += (size_t)M.page;
		if (M.top > last)
			M.top = last;
		return K_HANDLED;
	case 'b': case KEY_PPAGE:
		M.top = M.top > (size_t)M.page ? M.top - (size_t)M.page : 0;
		return K_HANDLED;
	case KEY_HOME: case 'g':
		M.top = 0;
		return K_HANDLED;
	case KEY_END: case 'G':
		M.top = last;
		return K_HANDLED;
	case 'e':
		M.top = wline_of(M.sec[SEC_ENV]);
		return K_HANDLED;
	case 'h':
		M.top = wline_of(M.sec[SEC_HDR]);
		return K_HANDLED;
	case 'l':
		M.top = wline_of(M.sec[SEC_LOG]);
		return K_HANDLED;
	case 'B':
		M.top = wline_of(M.sec[SEC_BODY]);
		return K_HANDLED;
	case 'r':
		load();
		return K_HANDLED;
	case 'd': case 'f': case 't': case 'x': case KEY_DC:
		if ((ids = calloc(2, sizeof(*ids))) == NULL || (ids[0] = strdup(M.id)) == NULL)
			qtop_oom();
		act_messages(ch == 'd' ? JOB_DELIVER : ch == 'f' ? JOB_FREEZE
			     : ch == 't' ? JOB_THAW : JOB_REMOVE, ids, 1);
		return K_HANDLED;
	case 'q': case 27: case KEY_LEFT: case KEY_BACKSPACE: case 127:
		msg_close();
		return K_HANDLED;
	default:
		return 0;
	}
}

const char *msg_hints(void)
{
	static char buf[200];
	size_t pct = M.nwl > 0 ? (M.top + (size_t)M.rows) * 100 / M.nwl : 100;

	if (pct > 100)
		pct = 100;
	snprintf(buf, sizeof(buf), "%3zu%%  q back  Spc/b page  e h l B envelope header "
		 "log body  d deliver  f freeze  t thaw  x remove  ? help", pct);
	return buf;
}

void msg_label(char *buf, size_t size)
{
	snprintf(buf, size, "Message %s", M.id);
}
