/*
 * q/conf.h - the configuration file qkit.conf.
 *
 * Lines:  name = value          (Exim smtp-transport option names)
 *         route PATTERN = HOST[:PORT] ...   (first match wins; "*" all;
 *                                "mx" = DNS MX then A/AAAA)
 *         retry PATTERN ERROR ALGORITHMS
 *         # comment, blank lines
 * Host lists are separated by spaces or commas; IPv6 literals in
 * brackets ([::1]:2525). Times as Exim writes them (30s, 5m, 2h, 1d).
 * Errors name the file, the line and what was expected.
 */
#ifndef Q_CONF_H
#define Q_CONF_H

#include "q/common.h"
#include "q/retry.h"
#include <stdio.h>

struct q_hostspec {
	char *name;              /* host name or IP literal (no brackets); "mx" */
	unsigned port;           /* 0 = the transport's port */
	bool mx;                 /* look the domain up in DNS */
};

struct q_route {
	char *pattern;           /* "*", "domain", "*.domain", glob */
	size_t nhosts;
	struct q_hostspec *hosts;
};

/* A host list (serialize_hosts, hosts_require_tls, ...): items are host
 * names, globs ("*.example.com"), IP addresses, CIDR nets, or "*";
 * "!item" negates (first match wins). Empty = matches nothing. */
struct q_hostlist {
	size_t n;
	char **items;
};

struct q_conf {
	char *path;                      /* the file read, or NULL (defaults) */
	char *spool_directory;           /* default LOCALSTATEDIR "/spool/qkit" */
	char *hosts_file;                /* NULL = none */
	char *primary_hostname;          /* EHLO name; default: gethostname() */
	/* smtp transport */
	unsigned port;                   /* 25 */
	unsigned hosts_max_try;          /* 5 */
	unsigned max_rcpt;               /* 100 */
	unsigned batch_max;              /* 500; 0 = no limit */
	long long connect_timeout;       /* 5m */
	long long command_timeout;       /* 5m */
	long long data_timeout;          /* 5m */
	long long final_timeout;         /* 10m */
	struct q_hostspec *fallback_hosts; size_t nfallback;
	struct q_hostlist serialize_hosts;
	unsigned serialize_max;          /* connections per serialized host; 1 */
	bool retry_include_ip_address;   /* true */
	struct q_hostlist hosts_require_tls;
	struct q_hostlist hosts_avoid_tls;
	struct q_hostlist tls_verify_hosts;  /* hosts whose certificate must verify */
	char *tls_verify_certificates;   /* CA file or dir; "system"; NULL */
	char *tls_certificate;           /* client certificate file */
	char *tls_privatekey;            /* its key; NULL = in the cert file */
	long long size_addition;         /* 1024; negative disables SIZE */
	bool delay_after_cutoff;         /* true */
	bool keepalive;                  /* true */
	char *interface;                 /* source IP to bind, or NULL */
	/* runner */
	unsigned remote_max_parallel;    /* 2 */
	unsigned queue_run_max;          /* 5 */
	long long retry_interval_max;    /* 24h; 1..Q_RETRY_INTERVAL_LIMIT (3d12h) */
	bool journal_sync;               /* true: a delivered message's
					    journal is on disk before the
					    message is removed (group syncs) */
	/* routes and retry rules, in file order */
	size_t nroutes;
	struct q_route *routes;
	size_t nretry;
	struct q_retry_rule *retry;
};

/* Which file to read: path (from -C) if not NULL, else $QKIT_CONFIG if
 * set, else SYSCONFDIR "/qkit.conf" if it exists, else NULL (built-in
 * defaults). */
Q_API const char *q_conf_locate(const char *path);

/* Load path (NULL = defaults only). A file named by -C or QKIT_CONFIG
 * that cannot be read is an error. Returns 0 or -1 with a text
 * "FILE:LINE: what was expected". */
Q_API int q_conf_load(const char *path, struct q_conf **conf_r,
		      const char **error_r);
Q_API void q_conf_free(struct q_conf **conf);

/* Print the effective configuration, in the file's own syntax. */
Q_API void q_conf_print(const struct q_conf *conf, FILE *f);

/* The route for a domain: the first matching route, or NULL (then the
 * caller uses MX lookup). */
Q_API const struct q_route *q_conf_route(const struct q_conf *conf,
					 const char *domain);

/* Does a host list match a host (name may be NULL; ip may be NULL)? */
Q_API bool q_hostlist_match(const struct q_hostlist *l, const char *name,
			    const char *ip);

/* Domain/host pattern match used by routes and retry rules: "*" all;
 * "*.example.com" subdomains; other globs with fnmatch; else exact.
 * Case-insensitive. "*@domain" matches an address's domain. */
Q_API bool q_pattern_match(const char *pattern, const char *subject);

#endif
