/*
 * q/util.h - generic helpers used by the library and the programs:
 * a growable byte buffer, Exim-style time values, and escaping for
 * terminals and JSON. Nothing here knows about mail.
 */
#ifndef Q_UTIL_H
#define Q_UTIL_H

#include "q/common.h"
#include <stdio.h>

/* A growable buffer. Always NUL-terminated after data[len] (the NUL is
 * not counted), so data can be used as a C string when it holds text.
 * Zero-initialise (struct q_buf b = {0}) before first use. */
struct q_buf {
	char *data;
	size_t len;
	size_t cap;
};

/* Each returns 0, or -1 on ENOMEM (the buffer is left unchanged). */
Q_API int q_buf_reserve(struct q_buf *b, size_t extra);
Q_API int q_buf_add(struct q_buf *b, const void *p, size_t n);
Q_API int q_buf_adds(struct q_buf *b, const char *s);
Q_API int q_buf_addc(struct q_buf *b, char c);
Q_API int q_buf_printf(struct q_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
Q_API void q_buf_reset(struct q_buf *b);          /* len = 0, keeps memory */
Q_API void q_buf_free(struct q_buf *b);           /* frees, zeroes */

/* Parse an Exim time value: "30s", "5m", "2h", "1d", "1w", combinations
 * such as "1h30m", and a bare number meaning seconds. Returns 0 and the
 * number of seconds, or -1 for anything else (empty, negative, overflow,
 * unknown unit). */
Q_API int q_time_parse(const char *s, long long *secs_r);

/* Format a duration the way Exim does: "0s", "45s", "5m", "2h15m",
 * "3d4h" (at most two units, largest first; negative values get a '-').
 * Writes into buf (size >= 16) and returns buf. */
Q_API char *q_time_format(long long secs, char *buf, size_t size);

/* Format an absolute time as "YYYY-MM-DD HH:MM:SS" in local time.
 * Returns buf (size >= 20). t == 0 gives "-". */
Q_API char *q_time_stamp(time_t t, char *buf, size_t size);

/* Append s (n bytes) to b for display on a terminal: printable ASCII and
 * valid UTF-8 (when utf8 is true) pass; every other byte, including ESC,
 * DEL and C1 controls, is written as \xHH; backslash as \\. Returns 0 or
 * -1 on ENOMEM. */
Q_API int q_escape_term(struct q_buf *b, const char *s, size_t n, bool utf8);

/* Write s to f escaped as by q_escape_term (utf8 true). */
Q_API void q_fputs_safe(const char *s, FILE *f);

/* Append s (n bytes) to b as a JSON string literal, quotes included.
 * Invalid UTF-8 bytes become \u00XX escapes of the byte (lossy but
 * always valid JSON). Returns 0 or -1 on ENOMEM. */
Q_API int q_json_str(struct q_buf *b, const char *s, size_t n);

/* The current boot id (the contents of /proc/sys/kernel/random/boot_id,
 * 36 chars). The environment variable QKIT_BOOT_ID overrides it (tests).
 * Writes into buf (size >= 40). Returns 0, or -1 when it cannot be read. */
Q_API int q_boot_id(char *buf, size_t size, const char **error_r);

/* true when a process with this pid exists (kill(pid, 0) != ESRCH). */
Q_API bool q_pid_alive(long pid);

#endif
