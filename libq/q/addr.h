/*
 * q/addr.h - mail addresses and message text.
 *
 * Address syntax is RFC 5321's Mailbox (Local-part "@" Domain), without
 * angle brackets: dot-atom or quoted-string local parts, domain names or
 * address literals ([192.0.2.1], [IPv6:...]). Limits: local part 64
 * octets, domain 255, whole address 254. UTF-8 (SMTPUTF8) is refused.
 */
#ifndef Q_ADDR_H
#define Q_ADDR_H

#include "q/common.h"
#include "q/util.h"

/* Check an address. The empty string is accepted only when allow_empty
 * (the null reverse-path <>). Returns 0 if valid, else -1 with a text
 * that names what is wrong ("local part longer than 64 octets", ...). */
Q_API int q_addr_check(const char *addr, bool allow_empty, const char **error_r);

/* Pointer to the domain part of a checked address (after the last '@'
 * outside quotes), or "" when there is none. */
Q_API const char *q_addr_domain(const char *addr);

/* Canonicalise a message read from a user into the spool's data form:
 * every line ends in CRLF (a bare LF or a bare CR ends a line too), and a
 * line starting with '.' gets a second '.' (dot-stuffing, RFC 5321
 * 4.5.2). The final ".\r\n" is NOT added. A missing final line end is
 * added. NUL bytes and lines longer than 998 octets (without CRLF) are
 * refused: -1 with a text naming the line number.
 * out must be zero-initialised or reset; on error its content is
 * undefined. */
Q_API int q_msg_canonicalize(const char *in, size_t len, struct q_buf *out,
			     const char **error_r);

/* Undo dot-stuffing of spool data (for display): appends to out. */
Q_API int q_msg_unstuff(const char *in, size_t len, struct q_buf *out);

/* For `submit -t`: collect the addresses of the To:, Cc: and Bcc: header
 * fields of a canonical message (CRLF, dot-stuffed; only the header part
 * is looked at; folded fields, display names, comments, groups and
 * quoted strings are understood). Each address is appended to *rcpts_r
 * (a malloc'd array of malloc'd strings, *n_r entries; the caller frees
 * with q_strv_free). Bcc: fields are removed from msg in place
 * (msg->len shrinks). Returns 0, or -1 with the text of the first bad
 * address. */
Q_API int q_msg_header_rcpts(struct q_buf *msg, char ***rcpts_r, size_t *n_r,
			     const char **error_r);

Q_API void q_strv_free(char ***v, size_t n);

#endif
