/*
 * qtop - the ncurses console for qkit's queue, retry records and live
 * SMTP sessions.
 *
 *   qtop [-C FILE]                the console
 *   qtop [-C FILE] --once         print the summary line and exit
 *   qtop [-C FILE] --bench-refresh N
 *                                 measure N refreshes without a terminal
 *
 * This file owns the program: options, the ncurses set-up, the main loop
 * (draw; wait for a key at most LOOP_MS; dispatch; KEY_RESIZE), the
 * summary line, the tab line, the status line, the y/n and line-input
 * prompts, the help screen, and the dispatch of keys to the panels
 * (view_*.c), whose handlers return K_HANDLED / K_REDRAW / K_QUIT.
 *
 * Invariants: the main thread never reads the spool for a list (the
 * fetcher thread of data.c does, and publishes snapshots) and never
 * changes a message (the workers of jobs.c do); the only spool reads
 * here are the ones of the message pager (one message). Nothing from
 * mail or servers is drawn without tx_escape (text.c). Signals that end
 * the program (INT, TERM, HUP) only set a flag, so the terminal is always
 * restored by endwin().
 *
 * Exit status: 0; 64 usage; 66/74/77/78 as the other qkit programs when
 * the configuration or the spool cannot be used (bin/cli.c).
 */
#include "config.h"
#include "tui/qtop.h"
#include "bin/cli.h"
#include "q/addr.h"
#include "q/conf.h"

#include <curses.h>
#include <errno.h>
#include <locale.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MS 200
#define STATUS_SECS 30

struct app app;

static const struct panel *const panels[3] = {
	&queue_panel, &retry_panel, &sess_panel,
};

static volatile sig_atomic_t got_signal;
static bool curses_on;

static void usage(FILE *f)
{
	fputs(
"usage: qtop [-C FILE] [--once]\n"
"The qkit console: the queue, the retry records and the live SMTP sessions.\n"
"\n"
"  -C FILE          configuration file (else $QKIT_CONFIG, else " SYSCONFDIR "/qkit.conf)\n"
"  --once           print the summary line and exit\n"
"  --bench-refresh N\n"
"                   time N refreshes of the queue without a terminal\n"
"  --help           this text\n"
"  --version        print the version\n"
"\n"
"Keys: 1 2 3 or Tab switch views, ? shows every key, q quits.\n", f);
}

_Noreturn void qtop_oom(void)
{
	if (curses_on)
		endwin();
	cli_oom();
}

/* ------------------------------------------------------------------ */
/* colours and attributes */

static int attrs[UA__N];

int ui_attr(enum ui_attr a)
{
	return attrs[a];
}

static void setup_attrs(void)
{
	const char *nc = getenv("NO_COLOR");

	app.colors = has_colors() && (nc == NULL || *nc == '\0');
	attrs[UA_NORMAL] = A_NORMAL;
	attrs[UA_CURSOR] = A_REVERSE;
	attrs[UA_DIM] = A_DIM;
	if (!app.colors) {
		attrs[UA_TITLE] = A_REVERSE;
		attrs[UA_HEADER] = A_BOLD | A_UNDERLINE;
		attrs[UA_MARK] = A_BOLD;
		attrs[UA_FROZEN] = A_BOLD;
		attrs[UA_SENDING] = A_BOLD;
		attrs[UA_DEFER] = A_NORMAL;
		attrs[UA_ERROR] = A_BOLD;
		attrs[UA_OK] = A_NORMAL;
		attrs[UA_TAB] = A_NORMAL;
		attrs[UA_TABSEL] = A_REVERSE | A_BOLD;
		attrs[UA_SECTION] = A_BOLD | A_UNDERLINE;
		return;
	}
	start_color();
	use_default_colors();
	init_pair(1, COLOR_WHITE, COLOR_BLUE);
	init_pair(2, COLOR_BLACK, COLOR_CYAN);
	init_pair(3, COLOR_YELLOW, -1);
	init_pair(4, COLOR_CYAN, -1);
	init_pair(5, COLOR_GREEN, -1);
	init_pair(6, COLOR_RED, -1);
	init_pair(7, COLOR_BLACK, COLOR_GREEN);
	attrs[UA_TITLE] = COLOR_PAIR(1) | A_BOLD;
	attrs[UA_HEADER] = COLOR_PAIR(2);
	attrs[UA_MARK] = COLOR_PAIR(3) | A_BOLD;
	attrs[UA_FROZEN] = COLOR_PAIR(4) | A_BOLD;
	attrs[UA_SENDING] = COLOR_PAIR(5) | A_BOLD;
	attrs[UA_DEFER] = COLOR_PAIR(3);
	attrs[UA_ERROR] = COLOR_PAIR(6) | A_BOLD;
	attrs[UA_OK] = COLOR_PAIR(5);
	attrs[UA_TAB] = A_NORMAL;
	attrs[UA_TABSEL] = COLOR_PAIR(7) | A_BOLD;
	attrs[UA_SECTION] = COLOR_PAIR(4) | A_BOLD;
}

/* ------------------------------------------------------------------ */
/* the summary line */

/* level 0: words; 1: shorter; 2: shortest. The spool path is added by
 * the caller. */
static void summary_text(const struct snap *s, int level, struct q_buf *b)
{
	const struct qsnap *q = s != NULL ? s->q : NULL;
	size_t n = q != NULL ? q->n : 0;
	char sz[16], age[16];
	unsigned d = s != NULL ? s->log_delivered : 0, f = s != NULL ? s->log_failed : 0;
	size_t ns = s != NULL ? s->nsess : 0;

	cli_fmt_size(q != NULL ? q->bytes : 0, sz, sizeof(sz));
	if (q != NULL && q->oldest != 0)
		cli_fmt_age((long long)((s->taken > 0 ? s->taken : time(NULL)) - q->oldest),
			    age, sizeof(age));
	else
		snprintf(age, sizeof(age), "-");
	if (q == NULL) {
		q_buf_printf(b, "reading the queue index...");
		return;
	}
	switch (level) {
	case 0:
		q_buf_printf(b, "%zu message%s, %zu frozen, %zu deferred, %s, oldest %s; "
			     "%zu session%s; last minute: %u delivered, %u failed",
			     n, n == 1 ? "" : "s", q->frozen, q->deferred, sz, age,
			     ns, ns == 1 ? "" : "s", d, f);
		break;
	case 1:
		q_buf_printf(b, "%zu msgs  %zu frozen  %zu deferred  %s  oldest %s  "
			     "%zu sess  1m: %u ok %u failed",
			     n, q->frozen, q->deferred, sz, age, ns, d, f);
		break;
	default:
		q_buf_printf(b, "%zu msg %zu frz %zu def %s old %s %zu ses 1m %u/%u",
			     n, q->frozen, q->deferred, sz, age, ns, d, f);
		break;
	}
}

/* The most verbose level that leaves room for the spool path (at least
 * its last 20 columns); the path right-aligned, cut on the left. */
static void draw_summary(int w)
{
	struct q_buf b = { 0 }, path = { 0 };
	int level, used, pw, room;

	tx_escape(&path, app.spool_dir, strlen(app.spool_dir));
	pw = tx_width(path.data, path.len);
	for (level = 0; level < 3; level++) {
		q_buf_reset(&b);
		q_buf_adds(&b, "qtop  ");
		summary_text(app.snap, level, &b);
		if (tx_width(b.data, b.len) + 2 + (pw < 20 ? pw : 20) <= w)
			break;
	}
	attrset(ui_attr(UA_TITLE));
	tx_put(0, 0, w, b.data);
	used = tx_width(b.data, b.len);
	room = w - used - 2;
	if (room >= 8) {
		const char *p = path.data;

		if (pw > room) {
			/* keep the end: "...tail" */
			while (*p != '\0' && tx_width(p, strlen(p)) > room - 3)
				p++;
			mvaddstr(0, w - room, "...");
			tx_put(0, w - room + 3, room - 3, p);
		} else {
			tx_put(0, w - pw, pw, p);
		}
	}
	attrset(A_NORMAL);
	q_buf_free(&b);
	q_buf_free(&path);
}

/* ------------------------------------------------------------------ */
/* status line, prompts */

static struct {
	char text[600];               /* raw: escaped when drawn */
	bool error;
	time_t t;
} status;

enum mode { M_NONE, M_CONFIRM, M_INPUT, M_HELP };

static struct {
	enum mode mode;
	char question[300];
	void (*yes)(void *);
	void *arg;
	void (*free_arg)(void *);
	char label[64];
	struct q_buf text;
	void (*changed)(const char *, int);
	int help_top;
} ui;

/* Damaged hints moved aside (q_hints_set_notice_fn): the notice may come
 * from any thread and the screen belongs to curses, so it waits here for
 * the main loop to put it on the status line. */
static pthread_mutex_t notice_mu = PTHREAD_MUTEX_INITIALIZER;
static char notice_text[400];

static void hints_notice(const char *text)
{
	pthread_mutex_lock(&notice_mu);
	snprintf(notice_text, sizeof(notice_text), "hints: %s", text);
	pthread_mutex_unlock(&notice_mu);
}

static bool notice_take(char *buf, size_t size)
{
	bool any;

	pthread_mutex_lock(&notice_mu);
	any = notice_text[0] != '\0';
	if (any) {
		snprintf(buf, size, "%s", notice_text);
		notice_text[0] = '\0';
	}
	pthread_mutex_unlock(&notice_mu);
	return any;
}

void ui_status(bool error, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(status.text, sizeof(status.text), fmt, ap);
	va_end(ap);
	status.error = error;
	status.t = time(NULL);
}

void ui_confirm(const char *question, void (*yes)(void *arg), void *arg,
		void (*free_arg)(void *arg))
{
	if (ui.mode == M_CONFIRM && ui.free_arg != NULL)
		ui.free_arg(ui.arg);
	ui.mode = M_CONFIRM;
	snprintf(ui.question, sizeof(ui.question), "%s", question);
	ui.yes = yes;
	ui.arg = arg;
	ui.free_arg = free_arg;
}

void ui_input(const char *label, const char *init,
	      void (*changed)(const char *text, int state))
{
	ui.mode = M_INPUT;
	snprintf(ui.label, sizeof(ui.label), "%s", label);
	q_buf_reset(&ui.text);
	q_buf_adds(&ui.text, init != NULL ? init : "");
	if (ui.text.data == NULL && q_buf_reserve(&ui.text, 16) < 0)
		qtop_oom();
	ui.changed = changed;
}

static void confirm_key(int ch)
{
	void (*yes)(void *) = ui.yes;
	void *arg = ui.arg;
	void (*fr)(void *) = ui.free_arg;

	ui.mode = M_NONE;
	if (ch == 'y' || ch == 'Y') {
		yes(arg);
	} else {
		ui_status(false, "cancelled: nothing changed");
	}
	if (fr != NULL)
		fr(arg);
}

static void input_key(int ch)
{
	if (ch == '\n' || ch == '\r' || ch == KEY_ENTER) {
		ui.mode = M_NONE;
		ui.changed(ui.text.data, 1);
		return;
	}
	if (ch == 27) {
		ui.mode = M_NONE;
		ui.changed(ui.text.data, -1);
		return;
	}
	if (ch == KEY_BACKSPACE || ch == 127 || ch == 8) {
		/* one character (UTF-8 continuation bytes with it) */
		while (ui.text.len > 0 &&
		       ((unsigned char)ui.text.data[ui.text.len - 1] & 0xC0) == 0x80)
			ui.text.len--;
		if (ui.text.len > 0)
			ui.text.len--;
		ui.text.data[ui.text.len] = '\0';
	} else if (ch == 21) {        /* ^U */
		q_buf_reset(&ui.text);
	} else if (ch >= 0x20 && ch <= 0xff && ch != 0x7f && ui.text.len < 200) {
		if (q_buf_addc(&ui.text, (char)ch) < 0)
			qtop_oom();
	} else {
		return;
	}
	ui.changed(ui.text.data, 0);
}

static void draw_status(int y, int w)
{
	char prog[400];
	struct q_buf b = { 0 };

	move(y, 0);
	attrset(A_NORMAL);
	if (ui.mode == M_CONFIRM) {
		q_buf_printf(&b, "%s (y/n)", ui.question);
		attrset(ui_attr(UA_ERROR));
		tx_put_raw(y, 0, w, b.data);
	} else if (ui.mode == M_INPUT) {
		int lw = (int)strlen(ui.label);
		struct q_buf e = { 0 };

		attrset(A_BOLD);
		tx_put_str(y, 0, lw + 1 < w ? lw + 1 : w, ui.label, false);
		attrset(A_NORMAL);
		tx_escape(&e, ui.text.data, ui.text.len);
		q_buf_addc(&e, '_');
		if (w - lw - 1 > 0) {
			int ew = tx_width(e.data, e.len);
			const char *p = e.data;

			/* the end of a long input stays visible */
			while (ew > w - lw - 1 && *p != '\0') {
				p++;
				ew = tx_width(p, strlen(p));
			}
			tx_put(y, lw + 1, w - lw - 1, p);
		}
		q_buf_free(&e);
	} else if (jobs_progress(app.snap != NULL ? app.snap->q : NULL, prog, sizeof(prog))) {
		attrset(ui_attr(UA_SENDING));
		tx_put_raw(y, 0, w, prog);
	} else if (status.text[0] != '\0' && app.now - status.t < STATUS_SECS) {
		attrset(status.error ? ui_attr(UA_ERROR) : ui_attr(UA_OK));
		tx_put_raw(y, 0, w, status.text);
	} else if (app.snap != NULL && app.snap->err[0] != '\0') {
		attrset(ui_attr(UA_ERROR));
		tx_put_raw(y, 0, w, app.snap->err);
	} else {
		tx_put_str(y, 0, w, "", false);
	}
	attrset(A_NORMAL);
	q_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* help */

struct helpline {
	const char *key, *text;
};

static const struct helpline help_global[] = {
	{ NULL, "Everywhere" },
	{ "1 2 3", "Queue, Retry, Sessions" },
	{ "Tab S-Tab", "next / previous view" },
	{ "Up Down j k", "move;  PgUp PgDn  page;  Home End g G  first / last" },
	{ "?  F1", "this help (any key closes it)" },
	{ "Ctrl-R  F5", "refresh now (and check the index against the spool)" },
	{ "Ctrl-L", "redraw the screen" },
	{ "q  Q", "quit (q closes a message first)" },
	{ NULL, "" },
	{ NULL, "Queue (one message per line)" },
	{ "Enter", "open the message: envelope, recipients, headers, log, body" },
	{ "Space", "mark / unmark (and move down);  a  mark all shown;  u  unmark all" },
	{ "d", "deliver now (qrun -M in the background, progress on the status line)" },
	{ "f  t", "freeze / thaw (the marked messages, else the current one)" },
	{ "x  Del", "remove (asks first, says how many; no bounce is sent)" },
	{ "/", "filter: sender, recipient, id or domain contains the text; Esc clears" },
	{ "A S F D", "sort by age, size, sender (from), domain; again reverses" },
	{ "s", "per-domain summary (messages, bytes, oldest, age buckets);" },
	{ "", "Enter on a domain filters the queue by it" },
	{ NULL, "" },
	{ NULL, "Retry (one retry record per line)" },
	{ "r", "retry now: clear the record and make its waiting messages due" },
	{ "x  Del", "delete the record (asks first)" },
	{ "d", "deliver now every message waiting for the record's host" },
	{ "Space a u", "mark, mark all shown, unmark all" },
	{ "/", "filter: key, error or text contains the text" },
	{ "K N F L E", "sort by key, next try, first failed, last try, error" },
	{ NULL, "" },
	{ NULL, "Sessions (live SMTP connections of qrun, refreshed every second)" },
	{ "Enter", "open the message being sent" },
	{ NULL, "" },
	{ NULL, "Message" },
	{ "Space PgDn", "page down;  b PgUp  page up;  arrows  scroll" },
	{ "e h l B", "jump to envelope, headers, message log, body" },
	{ "d f t x", "deliver now, freeze, thaw, remove this message" },
	{ "q Esc Left", "back to the list" },
	{ NULL, "" },
	{ NULL, "Bytes from mail and servers are shown escaped: \\xHH for control" },
	{ NULL, "characters and escape sequences, \\\\ for a backslash." },
};

static void draw_help(int y0, int h, int w)
{
	int n = (int)(sizeof(help_global) / sizeof(help_global[0]));
	char qrun[600];

	if (ui.help_top > n - 1)
		ui.help_top = n - 1;
	if (ui.help_top < 0)
		ui.help_top = 0;
	for (int i = 0; i < h; i++) {
		int k = ui.help_top + i;

		move(y0 + i, 0);
		clrtoeol();
		if (k == n) {
			snprintf(qrun, sizeof(qrun), "deliver now runs: %s", jobs_qrun_path());
			attrset(ui_attr(UA_DIM));
			tx_put_raw(y0 + i, 1, w - 1, qrun);
			attrset(A_NORMAL);
			continue;
		}
		if (k > n)
			continue;
		if (help_global[k].key == NULL) {
			attrset(ui_attr(UA_SECTION));
			tx_put_str(y0 + i, 1, w - 1, help_global[k].text, false);
			attrset(A_NORMAL);
		} else {
			attrset(A_BOLD);
			tx_put_str(y0 + i, 2, w > 16 ? 13 : w - 2, help_global[k].key, false);
			attrset(A_NORMAL);
			if (w > 17)
				tx_put_str(y0 + i, 16, w - 16, help_global[k].text, false);
		}
	}
}

static void help_key(int ch)
{
	if (ch == KEY_DOWN || ch == 'j')
		ui.help_top++;
	else if (ch == KEY_UP || ch == 'k')
		ui.help_top--;
	else if (ch == KEY_NPAGE || ch == ' ')
		ui.help_top += ui_list_height();
	else if (ch == KEY_PPAGE)
		ui.help_top -= ui_list_height();
	else
		ui.mode = M_NONE;
}

/* ------------------------------------------------------------------ */
/* navigation shared by the panels */

static int list_h = 10;

int ui_list_height(void)
{
	return list_h;
}

bool ui_nav(int ch, size_t n, size_t *cur, int page)
{
	size_t c = *cur;

	if (page < 1)
		page = 1;
	switch (ch) {
	case KEY_UP: case 'k':
		if (c > 0)
			c--;
		break;
	case KEY_DOWN: case 'j':
		if (c + 1 < n)
			c++;
		break;
	case KEY_PPAGE:
		c = c > (size_t)page ? c - (size_t)page : 0;
		break;
	case KEY_NPAGE:
		c += (size_t)page;
		if (c >= n)
			c = n > 0 ? n - 1 : 0;
		break;
	case KEY_HOME: case 'g':
		c = 0;
		break;
	case KEY_END: case 'G':
		c = n > 0 ? n - 1 : 0;
		break;
	default:
		return false;
	}
	*cur = c;
	return true;
}

void ui_scroll(size_t cur, size_t n, int h, size_t *top)
{
	if (h < 1)
		h = 1;
	if (cur < *top)
		*top = cur;
	if (cur >= *top + (size_t)h)
		*top = cur - (size_t)h + 1;
	if (n <= (size_t)h)
		*top = 0;
	else if (*top + (size_t)h > n)
		*top = n - (size_t)h;
}

/* ------------------------------------------------------------------ */
/* actions shared by the queue and message views */

struct act_arg {
	enum job_kind kind;
	char **ids;
	size_t n;
};

static void act_free(void *p)
{
	struct act_arg *a = p;

	q_strv_free(&a->ids, a->n);
	free(a);
}

static void act_go(void *p)
{
	struct act_arg *a = p;

	jobs_submit(a->kind, a->ids, a->n);
	ui_status(false, "removing %zu message%s...", a->n, a->n == 1 ? "" : "s");
	a->ids = NULL;
	a->n = 0;
}

void act_messages(enum job_kind kind, char **ids, size_t n)
{
	char q[300];

	if (n == 0) {
		q_strv_free(&ids, n);
		ui_status(true, "no message selected");
		return;
	}
	switch (kind) {
	case JOB_REMOVE: {
		struct act_arg *a = calloc(1, sizeof(*a));

		if (a == NULL)
			qtop_oom();
		a->kind = kind;
		a->ids = ids;
		a->n = n;
		if (n == 1)
			snprintf(q, sizeof(q), "Remove message %s? It is not delivered and "
				 "no bounce is sent.", ids[0]);
		else
			snprintf(q, sizeof(q), "Remove %zu messages? They are not delivered "
				 "and no bounce is sent.", n);
		ui_confirm(q, act_go, a, act_free);
		return;
	}
	case JOB_DELIVER:
		ui_status(false, "deliver now: %zu message%s handed to qrun", n,
			  n == 1 ? "" : "s");
		break;
	case JOB_FREEZE:
		ui_status(false, "freezing %zu message%s...", n, n == 1 ? "" : "s");
		break;
	case JOB_THAW:
		ui_status(false, "thawing %zu message%s...", n, n == 1 ? "" : "s");
		break;
	default:
		break;
	}
	jobs_submit(kind, ids, n);
}

/* ------------------------------------------------------------------ */
/* drawing */

static void draw_tabs(int y, int w)
{
	int x = 0;
	char lab[64], info[300];

	move(y, 0);
	clrtoeol();
	for (int i = 0; i < 3 && x < w; i++) {
		char t[80];
		int l;

		panels[i]->label(lab, sizeof(lab));
		snprintf(t, sizeof(t), " %d %s ", i + 1, lab);
		l = (int)strlen(t);
		attrset(i == app.view && !app.msgview ? ui_attr(UA_TABSEL) : ui_attr(UA_TAB));
		tx_put_str(y, x, l < w - x ? l : w - x, t, false);
		x += l + 1;
	}
	attrset(A_NORMAL);
	if (app.msgview) {
		msg_label(lab, sizeof(lab));
		snprintf(info, sizeof(info), " %s ", lab);
		attrset(ui_attr(UA_TABSEL));
		if (x < w)
			tx_put_str(y, x, (int)strlen(info) < w - x ? (int)strlen(info) : w - x,
				   info, false);
		attrset(A_NORMAL);
		return;
	}
	if (panels[app.view]->info != NULL && x + 2 < w) {
		panels[app.view]->info(info, sizeof(info));
		attrset(ui_attr(UA_DIM));
		tx_put_raw(y, x + 1, w - x - 1, info);
		attrset(A_NORMAL);
	}
}

static void draw(void)
{
	int h = LINES, w = COLS;
	const char *hints;

	erase();
	if (h < 8 || w < 30) {
		mvaddnstr(0, 0, "qtop: too small", w);
		if (h > 1)
			mvaddnstr(1, 0, "30x8 at least", w);
		if (h > 2)
			mvaddnstr(2, 0, "q quits", w);
		refresh();
		return;
	}
	draw_summary(w);
	draw_tabs(1, w);
	list_h = h - 5;        /* minus summary, tabs, header, status, hints */
	if (ui.mode == M_HELP)
		draw_help(2, h - 4, w);
	else if (app.msgview)
		msg_draw(2, h - 4, w);
	else
		panels[app.view]->draw(2, h - 4, w);
	draw_status(h - 2, w);
	hints = ui.mode == M_HELP ? "Up/Down scroll, any other key closes the help"
		: app.msgview ? msg_hints() : panels[app.view]->hints();
	attrset(ui_attr(UA_DIM));
	tx_put_str(h - 1, 0, w, hints, false);
	attrset(A_NORMAL);
	refresh();
}

/* ------------------------------------------------------------------ */
/* keys */

static void set_view(int v)
{
	if (v == app.view && !app.msgview)
		return;
	app.view = v;
	if (app.msgview)
		msg_close();
	data_want_retry(v == 1);
	if (v != 1)
		data_want_wait(NULL);
	if (app.snap != NULL)
		panels[v]->data();
}

static void key(int ch)
{
	int r = 0;

	if (ui.mode == M_CONFIRM) {
		confirm_key(ch);
		return;
	}
	if (ui.mode == M_INPUT) {
		input_key(ch);
		return;
	}
	if (ui.mode == M_HELP) {
		help_key(ch);
		return;
	}
	if (LINES < 8 || COLS < 30) {
		if (ch == 'q' || ch == 'Q')
			app.quit = true;
		return;
	}
	if (app.msgview)
		r = msg_key(ch);
	else
		r = panels[app.view]->key(ch);
	if (r & K_QUIT)
		app.quit = true;
	if (r & K_HANDLED)
		return;
	switch (ch) {
	case '\t':
		set_view((app.view + 1) % 3);
		break;
	case KEY_BTAB:
		set_view((app.view + 2) % 3);
		break;
	case '1': case '2': case '3':
		set_view(ch - '1');
		break;
	case '?': case KEY_F(1):
		ui.mode = M_HELP;
		ui.help_top = 0;
		break;
	case 'q': case 'Q':
		app.quit = true;
		break;
	case 12:      /* ^L */
		clearok(curscr, TRUE);
		break;
	case 18: case KEY_F(5):       /* ^R */
		data_poke(true);
		ui_status(false, "refreshing: reading the index and checking it "
			  "against the spool");
		break;
	default:
		break;
	}
}

/* ------------------------------------------------------------------ */
/* --once and --bench-refresh */

static int run_once(void)
{
	struct fetch *f = NULL;
	struct snap *s;
	struct q_buf b = { 0 };
	const char *err = NULL;

	if (fetch_new(app.spool_dir, &f, &err) < 0)
		cli_die(EX_IOERR, "%s", err != NULL ? err : "cannot open the spool");
	s = fetch_run(f, FETCH_CHECK, false, NULL);
	summary_text(s, 0, &b);
	cli_put("qtop: ");
	cli_putn(b.data, b.len);
	cli_put("; spool ");
	cli_puts_safe(app.spool_dir);
	cli_putc('\n');
	if (s->err[0] != '\0')
		cli_warn("%s", s->err);
	q_buf_free(&b);
	snap_unref(&s);
	fetch_free(&f);
	return EX_OK;
}

static double cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec * 1e3 + (double)ru.ru_utime.tv_usec / 1e3 +
	       (double)ru.ru_stime.tv_sec * 1e3 + (double)ru.ru_stime.tv_usec / 1e3;
}

static double wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Each figure: the CPU of this process (user + system, getrusage) per
 * refresh, averaged over n, and the worst single one. */
static int run_bench(long n)
{
	static const char *const sorts[4] = { "age", "size", "sender", "domain" };
	struct fetch *f = NULL;
	struct snap *s = NULL;
	const char *err = NULL;
	double c0, w0, c, worst;
	size_t decoded = 0;

	c0 = cpu_ms();
	w0 = wall_ms();
	if (fetch_new(app.spool_dir, &f, &err) < 0)
		cli_die(EX_IOERR, "%s", err != NULL ? err : "cannot open the spool");
	s = fetch_run(f, FETCH_WALK, false, NULL);
	c = cpu_ms() - c0;
	printf("qtop --bench-refresh: spool %s, %zu messages in the index\n",
	       app.spool_dir, s->q != NULL ? s->q->n : 0);
	printf("  %-48s %8.1f ms CPU, %8.1f ms wall\n",
	       "first refresh (open, walk, decode every record)", c, wall_ms() - w0);
	fflush(stdout);

#define MEASURE(label, expr, target) do { \
		double sum = 0; \
		unsigned gen = s->q != NULL ? s->q->gen : 0; \
		worst = 0; \
		decoded = 0; \
		for (long i = 0; i < n; i++) { \
			double t0 = cpu_ms(), d; \
			snap_unref(&s); \
			s = (expr); \
			d = cpu_ms() - t0; \
			sum += d; \
			if (d > worst) \
				worst = d; \
			if (s->q != NULL && s->q->gen != gen) { \
				decoded += s->q->decoded; \
				gen = s->q->gen; \
			} \
		} \
		printf("  %-48s %8.2f ms CPU avg, %7.2f worst (n=%ld, %zu decoded)", \
		       label, sum / (double)n, worst, n, decoded); \
		if ((target) > 0) \
			printf("  < %d ms: %s", (int)(target), \
			       sum / (double)n < (target) ? "met" : "MISSED"); \
		printf("\n"); \
		fflush(stdout); \
	} while (0)

	MEASURE("refresh, spool unchanged (directory stamps)",
		fetch_run(f, FETCH_AUTO, false, NULL), 50);
	MEASURE("refresh, index walk (as when the spool changed)",
		fetch_run(f, FETCH_WALK, false, NULL), 50);
	MEASURE("the same with the retry records (Retry view)",
		fetch_run(f, FETCH_WALK, true, NULL), 50);
	MEASURE("cross-check (q_spool_list, every 30 s)",
		fetch_run(f, FETCH_CHECK, false, NULL), 0);
	app.snap = s;
	for (int k = 0; k < 5; k++) {
		double sum = 0;
		char label[64];

		worst = 0;
		for (long i = 0; i < n; i++) {
			double t0 = cpu_ms(), d;

			/* the last: a filter that matches a few (a sender) */
			queue_bench(s, k < 4 ? k : 0, k < 4 ? NULL : "sender12@");
			d = cpu_ms() - t0;
			sum += d;
			if (d > worst)
				worst = d;
		}
		if (k < 4)
			snprintf(label, sizeof(label), "display list: sort by %s", sorts[k]);
		else
			snprintf(label, sizeof(label), "display list: filter \"sender12@\"");
		printf("  %-48s %8.2f ms CPU avg, %7.2f worst\n", label, sum / (double)n, worst);
	}
	app.snap = NULL;
	snap_unref(&s);
	fetch_free(&f);
	return EX_OK;
}

/* ------------------------------------------------------------------ */

static void on_signal(int sig)
{
	got_signal = sig;
}

int main(int argc, char **argv)
{
	char **nargv = calloc((size_t)argc + 1, sizeof(*nargv));
	int nargc = 0, i, rc = EX_OK;
	bool once = false;
	long bench = 0;
	const char *err = NULL;
	sigset_t block, old;
	struct sigaction sa;

	if (nargv == NULL)
		cli_oom();
	/* our own options; the shared ones (-C, --help, --version) go to cli */
	nargv[nargc++] = argv[0];
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--once") == 0) {
			once = true;
		} else if (strcmp(argv[i], "--bench-refresh") == 0 ||
			   strncmp(argv[i], "--bench-refresh=", 16) == 0) {
			const char *v = argv[i][15] == '=' ? argv[i] + 16
				       : i + 1 < argc ? argv[++i] : NULL;
			char *end;

			cli.prog = "qtop";
			if (v == NULL || (bench = strtol(v, &end, 10)) < 1 || *end != '\0' ||
			    bench > 100000)
				cli_usage_error("--bench-refresh needs a count from 1 to 100000");
		} else if ((strcmp(argv[i], "-C") == 0 || strcmp(argv[i], "--config") == 0) &&
			   i + 1 < argc) {
			nargv[nargc++] = argv[i++];
			nargv[nargc++] = argv[i];
		} else {
			nargv[nargc++] = argv[i];
		}
	}
	nargv[nargc] = NULL;
	i = cli_start("qtop", nargc, nargv, usage);
	if (i < nargc)
		cli_usage_error("unexpected argument '%s'", nargv[i]);

	cli_conf();
	cli_spool(false);
	cli_hints();
	app.spool_dir = q_spool_dir(cli.spool);
	app.conf_file = cli.conf_file;
	tx_setup(cli.utf8);
	if (once) {
		rc = run_once();
		free(nargv);
		return cli_end(rc);
	}
	if (bench > 0) {
		rc = run_bench(bench);
		free(nargv);
		return cli_end(rc);
	}
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))
		cli_die(EX_USAGE, "not a terminal (qtop --once prints the summary)");

	/* workers never take the signals meant for the main thread */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGWINCH);
	sigaddset(&block, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	if (data_start(app.spool_dir, &err) < 0)
		cli_die(EX_IOERR, "%s", err != NULL ? err : "cannot read the spool");
	if (jobs_start(app.spool_dir, app.conf_file, argv[0], &err) < 0)
		cli_die(EX_OSERR, "%s", err);
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	cli_flush();
	q_hints_set_notice_fn(hints_notice);   /* not stderr: curses owns it */
	if (initscr() == NULL)
		cli_die(EX_OSERR, "cannot set up the terminal");
	curses_on = true;
	cbreak();
	noecho();
	nonl();
	keypad(stdscr, TRUE);
	curs_set(0);
	set_escdelay(25);
	timeout(LOOP_MS);
	setup_attrs();

	while (!app.quit && got_signal == 0) {
		struct snap *s = data_get(app.snap);
		char res[400];
		bool rerr;
		int ch;

		app.now = time(NULL);
		if (s != app.snap) {
			app.snap = s;
			panels[app.view]->data();
		}
		while (jobs_result(res, sizeof(res), &rerr))
			ui_status(rerr, "%s", res);
		if (notice_take(res, sizeof(res)))
			ui_status(true, "%s", res);
		draw();
		ch = getch();
		if (ch == ERR || ch == KEY_RESIZE)
			continue;
		key(ch);
		/* typeahead first (a filter being typed, keys held down):
		   one draw, one rebuild of a list, for all of it */
		timeout(0);
		for (int k = 0; k < 256 && !app.quit && (ch = getch()) != ERR; k++)
			if (ch != KEY_RESIZE)
				key(ch);
		timeout(LOOP_MS);
	}
	endwin();
	curses_on = false;
	data_stop();
	jobs_stop();
	snap_unref(&app.snap);
	q_buf_free(&ui.text);
	free(nargv);
	return cli_end(EX_OK);
}
