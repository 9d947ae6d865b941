/*
 * q_private.h - internals shared by libq's modules; never installed.
 */
#ifndef Q_PRIVATE_H
#define Q_PRIVATE_H

#include "q/common.h"

/* Format an error into the calling thread's error buffer, store it in
 * *error_r (when error_r is not NULL) and return -1, so that a failure
 * path reads:  return q_err(error_r, "open %s: %s", path, strerror(errno));
 * The text may mention the buffer's previous content (it is copied
 * first), so  q_err(error_r, "%s: %s", path, *error_r)  is safe. */
int q_err(const char **error_r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The calling thread's error text (last q_err). */
const char *q_err_last(void);

/* Base-62 digits in ASCII order: 0-9A-Za-z. */
extern const char q_b62[63];

/* q_log.c: until q_log_release, this thread's q_log lines are kept and
 * then written together in one write(2) (the results of one message
 * are one append to the main log instead of one per recipient). Only
 * around code that does not wait for the network: a process killed in
 * between loses the held lines. */
void q_log_hold(void);
void q_log_release(void);

/* q_smtp_reply.c: the length of an RFC 3463 enhanced status code of
 * class cls ('2', '4' or '5') at the start of s (at most n bytes; a NUL
 * ends s too): cls "." 1*3DIGIT "." 1*3DIGIT, followed by the end of s
 * or one of the bytes in ends. 0 when s does not start with one. */
size_t q_enh_len(const char *s, size_t n, char cls, const char *ends);

#endif
