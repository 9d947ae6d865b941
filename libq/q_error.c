/*
 * q_error.c - the per-thread error buffer behind every error_r.
 * Invariant: the text is always NUL-terminated and at most Q_ERR_MAX-1
 * bytes; longer texts are cut with "...".
 */
#include "config.h"
#include "q_private.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define Q_ERR_MAX 1024

static _Thread_local char err_buf[Q_ERR_MAX];

const char q_b62[63] =
	"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

int q_err(const char **error_r, const char *fmt, ...)
{
	char tmp[Q_ERR_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(tmp))
		memcpy(tmp + sizeof(tmp) - 4, "...", 4);
	memcpy(err_buf, tmp, sizeof(err_buf));
	if (error_r != NULL)
		*error_r = err_buf;
	return -1;
}

const char *q_err_last(void)
{
	return err_buf;
}

const char *q_version(void)
{
	return PACKAGE_VERSION;
}
