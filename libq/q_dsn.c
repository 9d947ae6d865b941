/*
 * q_dsn.c - bounce messages: delivery status notifications (RFC 3464,
 * multipart/report; report-type=delivery-status) queued to the sender of
 * a message whose recipients failed permanently.
 *
 * The bounce has the null sender (so it can never bounce itself), is
 * flagged Q_ENV_BOUNCE, and carries the original header (not the body).
 * Text that came from a server is cut to printable ASCII before it goes
 * into the report: a server cannot inject header lines or MIME parts.
 */
#include "config.h"
#include "q_private.h"
#include "q/runner.h"
#include "q/spool.h"
#include "q/addr.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DSN_MAX_HEADER (64 * 1024)
#define DSN_MAX_DIAG 400
#define DSN_MAX_ADDR 900        /* "Final-Recipient: rfc822; " + this < 998 */

static void add_clean(struct q_buf *b, const char *s, size_t max)
{
	size_t n = 0;
	for (; s != NULL && *s && n < max; s++, n++) {
		unsigned char c = (unsigned char)*s;
		q_buf_addc(b, (c >= 0x20 && c < 0x7f) ? (char)c : ' ');
	}
}

/* An address from the envelope (never checked by the spool: one with
 * control characters or over 1024 octets fails at the SMTP client and
 * bounces): control characters become spaces, octets over 127 stay
 * (SMTPUTF8), and the line stays under 998 octets. */
static void add_addr(struct q_buf *b, const char *s)
{
	size_t n = 0;
	for (; *s && n < DSN_MAX_ADDR; s++, n++) {
		unsigned char c = (unsigned char)*s;
		q_buf_addc(b, (c >= 0x20 && c != 0x7f) ? (char)c : ' ');
	}
	if (*s)
		q_buf_adds(b, "...");
}

static void rfc5322_date(time_t t, char *buf, size_t size)
{
	struct tm tm;
	localtime_r(&t, &tm);
	strftime(buf, size, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

#define BLANKS " \t\n\r"

static bool blank(char c)
{
	return c != '\0' && strchr(BLANKS, c) != NULL;
}

/* The server's reply in a recipient's result. rc->last_error is either
 * the reply's text (codes stripped: how replies to RCPT, DATA and the
 * final dot are stored) or "<stage>: <code> <text>" (the SMTP client's
 * form for a reply that ended the dialogue: "MAIL FROM refused: 550 5.7.1
 * sender rejected"), a stage of letters and spaces followed by the
 * recipient's own code. Returns the reply's text; *stage_len_r is the
 * length of the stage (0 when there is none). */
static const char *reply_of(const struct q_rcpt *rc, size_t *stage_len_r)
{
	const char *t = rc->last_error ? rc->last_error : "";
	char code[8];
	size_t i = 0;

	*stage_len_r = 0;
	if (rc->last_code < 100 || rc->last_code > 999)
		return t;
	snprintf(code, sizeof(code), "%d", rc->last_code);
	while (i < 64 && ((t[i] >= 'A' && t[i] <= 'Z') ||
			  (t[i] >= 'a' && t[i] <= 'z') || t[i] == ' '))
		i++;
	if (i == 0 || t[i] != ':' || t[i + 1] != ' ' ||
	    strncmp(t + i + 2, code, 3) != 0 ||
	    (t[i + 5] != '\0' && t[i + 5] != ' '))
		return t;
	*stage_len_r = i;
	return t + i + 5 + (t[i + 5] == ' ');
}

/* Failures without a reply (code 0), by the texts the router and the
 * SMTP client store (q_route.c, q_smtp.c; the runner prefixes the domain).
 * The first match wins. A code-0 or 4xx failure that none matches is one
 * the runner failed because its retry time ran out. */
static const struct {
	const char *text;
	const char *status;
} no_reply[] = {
	{"(null MX, RFC 7505)", "5.1.10"},          /* RFC 7505 3 */
	{": domain does not exist", "5.1.2"},       /* .invalid */
	{": MX lookup: NXDOMAIN", "5.1.2"},
	{": domain has no MX or address records", "5.1.2"},
	{": not a valid domain name", "5.1.2"},
	{": bad address literal", "5.1.2"},
	{": MX records point to IP addresses", "5.4.4"},
	{": host not found", "5.4.4"},              /* an MX host's name */
	{": no hosts", "5.4.4"},
	{": routing failed", "5.4.4"},
	{"no fallback_hosts configured", "5.4.4"},
	{"recipient address with control characters", "5.1.3"},
	{"sender address with control characters", "5.1.7"},
	{"nothing to send", "5.0.0"},
};

/* The Status of a failed recipient (always class 5: Action is failed):
 * for a 5xx reply the first word of its text that is an enhanced code of
 * class 5, else 5.0.0; without a reply what no_reply[] says; else (a 4xx,
 * or no reply, until the retry timeout) 5.4.7. */
static void status_of(const struct q_rcpt *rc, const char *reply, char *out,
		      size_t size)
{
	if (rc->last_code >= 500 && rc->last_code <= 599) {
		for (const char *w = reply; *w; w++) {
			if (w != reply && !blank(w[-1]))
				continue;
			size_t len = q_enh_len(w, SIZE_MAX, '5', BLANKS);
			if (len > 0 && len < size) {
				memcpy(out, w, len);
				out[len] = '\0';
				return;
			}
		}
	}
	if (rc->last_code == 0 && rc->last_error != NULL) {
		for (size_t i = 0; i < sizeof(no_reply) / sizeof(no_reply[0]); i++)
			if (strstr(rc->last_error, no_reply[i].text) != NULL) {
				snprintf(out, size, "%s", no_reply[i].status);
				return;
			}
	}
	snprintf(out, size, "%s", rc->last_code == 0 ||
		 (rc->last_code >= 400 && rc->last_code <= 499) ? "5.4.7" : "5.0.0");
}

/* The header part of the original message (canonical form, unstuffed). */
static int read_header(struct q_spool *spool, const char *id, struct q_buf *out)
{
	char path[4096];
	q_spool_path(spool, id, 'D', path, sizeof(path));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	char *buf = malloc(DSN_MAX_HEADER + 1);
	if (buf == NULL) {
		close(fd);
		return -1;
	}
	ssize_t n = 0, got;
	while (n < DSN_MAX_HEADER &&
	       (got = read(fd, buf + n, (size_t)(DSN_MAX_HEADER - n))) > 0)
		n += got;
	close(fd);
	buf[n] = '\0';
	char *end = strstr(buf, "\r\n\r\n");
	size_t len = end ? (size_t)(end - buf) + 2 : (size_t)n;
	struct q_buf tmp = {0};
	int ret = q_msg_unstuff(buf, len, &tmp);
	free(buf);
	if (ret == 0) {
		/* back to LF lines; canonicalize will turn them into CRLF */
		for (size_t i = 0; i < tmp.len; i++)
			if (tmp.data[i] != '\r')
				q_buf_addc(out, tmp.data[i]);
	}
	q_buf_free(&tmp);
	return ret;
}

int q_dsn_queue(struct q_spool *spool, const struct q_env *env,
		const size_t *failed, size_t n, const char *our_name,
		char *id_r, const char **error_r)
{
	id_r[0] = '\0';
	if (env->sender == NULL || env->sender[0] == '\0' || n == 0)
		return 0;
	if (our_name == NULL || our_name[0] == '\0')
		our_name = "localhost";

	struct q_buf b = {0}, canon = {0};
	char date[64], adate[64], boundary[64];
	time_t now = time(NULL);
	rfc5322_date(now, date, sizeof(date));
	rfc5322_date(env->arrival, adate, sizeof(adate));
	snprintf(boundary, sizeof(boundary), "%s-%ld-qkit", env->id, (long)now);

	q_buf_printf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\n", our_name);
	q_buf_adds(&b, "To: <");
	add_addr(&b, env->sender);
	q_buf_adds(&b, ">\n");
	q_buf_adds(&b, "Subject: Mail delivery failed: returning message to sender\n");
	q_buf_printf(&b, "Date: %s\n", date);
	/* one per bounce (RFC 5322 3.6.4): a message can bounce in several
	   runs, and several processes make bounces */
	static atomic_uint dsn_seq;
	unsigned seq = atomic_fetch_add_explicit(&dsn_seq, 1, memory_order_relaxed);
	q_buf_printf(&b, "Message-ID: <%s-dsn.%lld.%ld.%u@%s>\n", env->id,
		     (long long)now, (long)getpid(), seq, our_name);
	q_buf_adds(&b, "Auto-Submitted: auto-replied\nMIME-Version: 1.0\n");
	q_buf_printf(&b, "Content-Type: multipart/report; report-type=delivery-status;\n"
		     "\tboundary=\"%s\"\n\n", boundary);
	q_buf_adds(&b, "This is a MIME-encapsulated delivery status notification.\n\n");
	q_buf_printf(&b, "--%s\nContent-Type: text/plain; charset=us-ascii\n\n", boundary);
	q_buf_printf(&b, "This message was created automatically by mail delivery software\n"
		     "(qkit on %s).\n\n"
		     "A message that you sent could not be delivered to one or more of\n"
		     "its recipients. This is a permanent error. The following address(es)\n"
		     "failed:\n\n", our_name);
	for (size_t i = 0; i < n; i++) {
		if (failed[i] >= env->nrcpt)
			continue;
		const struct q_rcpt *rc = &env->rcpt[failed[i]];
		q_buf_adds(&b, "  ");
		add_addr(&b, rc->addr);
		q_buf_adds(&b, "\n    ");
		if (rc->host) {
			q_buf_adds(&b, "host ");
			add_clean(&b, rc->host, 255);
			q_buf_adds(&b, ": ");
		}
		/* the stored text as it is: with its stage ("MAIL FROM
		   refused: 550 ...") when it has one, else after the code */
		size_t stage;
		(void)reply_of(rc, &stage);
		if (rc->last_code && stage == 0)
			q_buf_printf(&b, "%d ", rc->last_code);
		add_clean(&b, rc->last_error ? rc->last_error : "failed", DSN_MAX_DIAG);
		q_buf_adds(&b, "\n\n");
	}
	q_buf_printf(&b, "--%s\nContent-Type: message/delivery-status\n\n", boundary);
	q_buf_printf(&b, "Reporting-MTA: dns; %s\nX-Qkit-Queue-ID: %s\nArrival-Date: %s\n",
		     our_name, env->id, adate);
	for (size_t i = 0; i < n; i++) {
		if (failed[i] >= env->nrcpt)
			continue;
		const struct q_rcpt *rc = &env->rcpt[failed[i]];
		char status[16];
		size_t stage;
		const char *reply = reply_of(rc, &stage);
		status_of(rc, reply, status, sizeof(status));
		q_buf_adds(&b, "\nFinal-Recipient: rfc822; ");
		add_addr(&b, rc->addr);
		q_buf_printf(&b, "\nAction: failed\nStatus: %s\n", status);
		/* RFC 3464 2.3.5: the MTA that reported the status; none for a
		   failure without a reply (routing, no connection) */
		if (rc->host && rc->last_code) {
			q_buf_adds(&b, "Remote-MTA: dns; ");
			add_clean(&b, rc->host, 255);
			q_buf_adds(&b, "\n");
		}
		q_buf_adds(&b, rc->last_code ? "Diagnostic-Code: smtp; " : "Diagnostic-Code: X-qkit; ");
		/* RFC 3464 2.3.6: the reply as the server sent it, once */
		if (rc->last_code)
			q_buf_printf(&b, "%d ", rc->last_code);
		add_clean(&b, rc->last_error ? reply : "failed", DSN_MAX_DIAG);
		q_buf_adds(&b, "\n");
		if (rc->last_time) {
			char ld[64];
			rfc5322_date(rc->last_time, ld, sizeof(ld));
			q_buf_printf(&b, "Last-Attempt-Date: %s\n", ld);
		}
	}
	q_buf_printf(&b, "\n--%s\nContent-Type: text/rfc822-headers\n\n", boundary);
	(void)read_header(spool, env->id, &b);
	q_buf_printf(&b, "\n--%s--\n", boundary);

	int ret = -1;
	if (b.data == NULL) {
		ret = q_err(error_r, "bounce for %s: out of memory", env->id);
		goto out;
	}
	if (q_msg_canonicalize(b.data, b.len, &canon, error_r) < 0)
		goto out;
	const char *rcpt[1] = {env->sender};
	struct q_newmsg m = {
		.sender = "",
		.rcpts = rcpt,
		.nrcpt = 1,
		.data = canon.data,
		.len = canon.len,
		.flags = Q_ENV_BOUNCE,
	};
	ret = q_spool_create(spool, &m, 0, id_r, error_r);
out:
	q_buf_free(&b);
	q_buf_free(&canon);
	return ret;
}
