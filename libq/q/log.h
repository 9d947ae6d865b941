/*
 * q/log.h - the main log (<spool>/log/mainlog) and, where asked, syslog.
 * Lines are "YYYY-MM-DD HH:MM:SS [pid] text"; text is escaped so that
 * bytes from mail or servers cannot forge lines (newlines, controls).
 */
#ifndef Q_LOG_H
#define Q_LOG_H

#include "q/common.h"

/* Open the main log in spool_dir/log (created 0700, file 0600, appended
 * with O_APPEND, one write per line). use_syslog also sends each line to
 * syslog(LOG_MAIL). Without a call, q_log writes nowhere. */
Q_API int q_log_open(const char *spool_dir, bool use_syslog, const char **error_r);
Q_API void q_log_close(void);
Q_API void q_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
