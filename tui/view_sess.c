/*
 * tui/view_sess.c - the Sessions panel: every live SMTP connection of
 * the delivery runner (pid, host, IP and port, TLS and cipher, protocol
 * state, current message, messages sent on the connection, bytes,
 * elapsed), from the session registry (q_session_list), which the
 * fetcher reads every second. A detail pane shows the session under the
 * cursor in full. Enter opens the message being sent.
 *
 * The registry only lists sessions of live processes of this boot
 * (libq deletes the others as it meets them).
 */
#include "config.h"
#include "tui/qtop.h"
#include "bin/cli.h"

#include <curses.h>
#include <stdlib.h>
#include <string.h>

static struct {
	size_t cur, top;
	long pid;
	uint32_t worker;
} S;

static size_t nsess(void)
{
	return app.snap != NULL ? app.snap->nsess : 0;
}

static void follow(void)
{
	const struct snap *s = app.snap;

	if (s == NULL)
		return;
	for (size_t i = 0; i < s->nsess; i++) {
		if (s->sess[i].pid == S.pid && s->sess[i].worker == S.worker) {
			S.cur = i;
			return;
		}
	}
	if (S.cur >= s->nsess)
		S.cur = s->nsess > 0 ? s->nsess - 1 : 0;
}

static void remember(void)
{
	if (nsess() > 0) {
		S.pid = app.snap->sess[S.cur].pid;
		S.worker = app.snap->sess[S.cur].worker;
	}
}

static void ipport(const struct q_session_rec *r, char *buf, size_t size)
{
	const char *ip = r->ip != NULL ? r->ip : "-";

	if (strchr(ip, ':') != NULL)
		snprintf(buf, size, "[%s]:%u", ip, (unsigned)r->port);
	else
		snprintf(buf, size, "%s:%u", ip, (unsigned)r->port);
}

static void draw_detail(int y, int h, int w)
{
	const struct q_session_rec *r = &app.snap->sess[S.cur];
	struct q_buf b = { 0 };
	char ip[128], t[32], e[16], c[32];
	int line = 0;

	attrset(ui_attr(UA_HEADER));
	move(y, 0);
	for (int x = 0; x < w; x++)
		addch(' ');
	snprintf(t, sizeof(t), " pid %ld worker %u", r->pid, (unsigned)r->worker);
	tx_put_str(y, 0, w, t, false);
	attrset(A_NORMAL);
	line++;
	ipport(r, ip, sizeof(ip));
	q_buf_adds(&b, "host ");
	q_buf_adds(&b, r->host != NULL ? r->host : "-");
	q_buf_adds(&b, "  ");
	q_buf_adds(&b, ip);
	if (line < h)
		tx_put_raw(y + line++, 1, w - 1, b.data);
	q_buf_reset(&b);
	q_buf_adds(&b, "TLS: ");
	q_buf_adds(&b, r->tls != NULL ? r->tls : "no (clear text)");
	if (line < h)
		tx_put_raw(y + line++, 1, w - 1, b.data);
	q_buf_reset(&b);
	q_buf_adds(&b, "state ");
	q_buf_adds(&b, r->state != NULL ? r->state : "-");
	q_buf_adds(&b, "  message ");
	q_buf_adds(&b, r->msgid != NULL ? r->msgid : "-");
	q_buf_printf(&b, "  on this connection: %u message%s sent, %s bytes",
		     (unsigned)r->msgs, r->msgs == 1 ? "" : "s",
		     cli_fmt_size(r->bytes, c, sizeof(c)));
	if (line < h)
		tx_put_raw(y + line++, 1, w - 1, b.data);
	q_buf_reset(&b);
	q_buf_printf(&b, "connected %s (%s ago), last change %s ago",
		     q_time_stamp(r->started, t, sizeof(t)),
		     q_time_format((long long)(app.now - r->started), e, sizeof(e)),
		     q_time_format((long long)(app.now - r->changed), c, sizeof(c)));
	if (line < h)
		tx_put_str(y + line++, 1, w - 1, b.data, false);
	q_buf_free(&b);
}

static void s_draw(int y0, int h, int w)
{
	struct col c[] = {
		{ "PID", 7, 7, 0, true, 0, 0, false },
		{ "HOST", 10, 40, 0, false, 0, 0, false },
		{ "IP:PORT", 15, 47, 1, false, 0, 0, false },
		{ "TLS", 7, 44, 3, false, 0, 0, false },
		{ "STATE", 6, 10, 0, false, 0, 0, false },
		{ "MESSAGE", Q_ID_LEN, Q_ID_LEN, 2, false, 0, 0, false },
		{ "MSGS", 4, 5, 5, true, 0, 0, false },
		{ "BYTES", 6, 6, 4, true, 0, 0, false },
		{ "TIME", 6, 7, 2, true, 0, 0, false },
	};
	int nc = (int)(sizeof(c) / sizeof(c[0])), rows, dh;
	size_t n = nsess();

	cols_layout(c, nc, w);
	cols_header(c, nc, y0, w);
	if (app.snap == NULL) {
		tx_put_str(y0 + 1, 1, w - 1, "reading the sessions...", false);
		return;
	}
	if (n == 0) {
		tx_put_str(y0 + 1, 1, w - 1, "no live sessions", false);
		return;
	}
	follow();
	dh = h >= 14 ? 5 : 0;
	rows = h - 1 - dh;
	ui_scroll(S.cur, n, rows, &S.top);
	for (int i = 0; i < rows && S.top + (size_t)i < n; i++) {
		size_t k = S.top + (size_t)i;
		const struct q_session_rec *r = &app.snap->sess[k];
		int y = y0 + 1 + i;
		char t[128];

		attrset(k == S.cur ? ui_attr(UA_CURSOR) : 0);
		move(y, 0);
		for (int x = 0; x < w; x++)
			addch(' ');
		snprintf(t, sizeof(t), "%ld", r->pid);
		tx_put_str(y, c[0].x, c[0].w, t, true);
		tx_put_raw(y, c[1].x, c[1].w, r->host != NULL ? r->host : "-");
		if (c[2].w > 0) {
			ipport(r, t, sizeof(t));
			tx_put_raw(y, c[2].x, c[2].w, t);
		}
		if (c[3].w > 0)
			tx_put_raw(y, c[3].x, c[3].w, r->tls != NULL ? r->tls : "-");
		if (c[4].w > 0) {
			attrset((k == S.cur ? ui_attr(UA_CURSOR) : 0) |
				ui_attr(UA_SENDING));
			tx_put_raw(y, c[4].x, c[4].w, r->state != NULL ? r->state : "-");
			attrset(k == S.cur ? ui_attr(UA_CURSOR) : 0);
		}
		if (c[5].w > 0)
			tx_put_raw(y, c[5].x, c[5].w, r->msgid != NULL ? r->msgid : "-");
		if (c[6].w > 0) {
			snprintf(t, sizeof(t), "%u", (unsigned)r->msgs);
			tx_put_str(y, c[6].x, c[6].w, t, true);
		}
		if (c[7].w > 0)
			tx_put_str(y, c[7].x, c[7].w, cli_fmt_size(r->bytes, t, sizeof(t)), true);
		if (c[8].w > 0)
			tx_put_str(y, c[8].x, c[8].w,
				   q_time_format((long long)(app.now - r->started), t, sizeof(t)),
				   true);
		attrset(A_NORMAL);
	}
	if (dh > 0)
		draw_detail(y0 + h - dh, dh, w);
}

static int s_key(int ch)
{
	size_t c = S.cur;

	if (ui_nav(ch, nsess(), &c, ui_list_height())) {
		S.cur = c;
		remember();
		return K_HANDLED;
	}
	if ((ch == '\r' || ch == '\n' || ch == KEY_ENTER) && nsess() > 0) {
		const char *id = app.snap->sess[S.cur].msgid;

		if (id != NULL && q_id_valid(id))
			msg_open(id);
		else
			ui_status(false, "this connection is not sending a message now");
		return K_HANDLED;
	}
	return 0;
}

static const char *s_hints(void)
{
	return "? help  Enter open the message being sent  Up/Down select  1 2 3 views  q quit";
}

static void s_label(char *buf, size_t size)
{
	snprintf(buf, size, "Sessions %zu", nsess());
}

static void s_info(char *buf, size_t size)
{
	snprintf(buf, size, "refreshed every second");
}

static void s_data(void)
{
	follow();
}

const struct panel sess_panel = {
	.name = "Sessions",
	.data = s_data,
	.draw = s_draw,
	.key = s_key,
	.hints = s_hints,
	.label = s_label,
	.info = s_info,
};
