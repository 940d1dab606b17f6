/* parleyctl: the admin tool. It finds parleyd's control socket (-s, or
 * the configuration given with -c, or the embedded default's), sends one
 * request, prints the answer (or JSON with --json) and exits 0 (ok),
 * 1 (the daemon refused), 2 (usage) or 3 (no daemon to talk to).
 * Passwords are read from the terminal without echo, or from the first
 * line of standard input, never from the command line where `ps` would
 * show them. */
#include "autoconfig.h"
#include "config.h"
#include "ctl/protocol.h"
#include "jid.h"
#include "server.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <libxml/parser.h>

enum { EXIT_OK = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

/* The longest password line read; longer ones are refused here rather
 * than cut short silently (the daemon's own limit is lower). */
#define MAX_PASSWORD_LINE 4096

static bool json_output;

static void usage(FILE *out)
{
	fprintf(out,
		"usage: parleyctl [-s SOCKET | -c CONFIG] [--json] COMMAND [ARGS]\n"
		"commands:\n"
		"  adduser JID      create an account (password from the terminal or stdin)\n"
		"  passwd JID       change an account's password\n"
		"  deluser JID      delete an account and all its data\n"
		"  users [HOST]     list accounts\n"
		"  status           version, uptime, sessions, users, modules, store\n"
		"  backup FILE      online compacted copy of the store into FILE\n"
		"  reload           re-read the configuration (as SIGHUP)\n"
		"  stop             shut parleyd down cleanly\n"
		"  delete-archive JID  delete an account's message archive (module mam)\n"
		"  upload list [JID]   list uploaded files: slot, owner, size, state, type, name\n"
		"  upload delete SLOT  delete an uploaded file (module upload)\n"
		"  s2s              federation streams: direction, domains, authentication, TLS\n"
		"options:\n"
		"  -s, --socket SOCKET  the control socket\n"
		"  -c, --config CONFIG  take the socket from this configuration file\n"
		"                       (default: the embedded configuration's,\n"
		"                       ./var/parley/parleyd.sock)\n"
		"  --json               print the answer as one JSON object\n"
		"  -h, --help           this text\n"
		"  -V, --version        the version\n"
		"exit status: 0 ok, 1 refused by parleyd, 2 usage error, 3 parleyd unreachable\n");
}

static void print_json_string(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

/* Reports an error (on stderr, and as {"error":...} on stdout for --json)
 * and returns the exit code to use. */
static int fail(int code, const char *fmt, ...) PL_PRINTF(2, 3);
static int fail(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *message = pl_vasprintf(fmt, ap);
	va_end(ap);
	if (json_output) {
		printf("{\"error\":");
		print_json_string(message);
		printf("}\n");
		fflush(stdout);
	}
	fprintf(stderr, "parleyctl: %s\n", message);
	free(message);
	return code;
}

/* The socket the configuration at `path` (NULL: the embedded default)
 * puts parleyd's control socket at: <control socket>, else
 * <storage path>/parleyd.sock, as parleyd itself decides. */
static char *socket_from_config(const char *path, char **error)
{
	struct pl_config *config;
	int rc = path ? pl_config_load_file(path, &config, error)
		      : pl_config_load_memory(pl_config_embedded_default,
					      strlen(pl_config_embedded_default),
					      "(embedded default)", &config, error);
	if (rc)
		return NULL;
	struct pl_core_conf core = { 0 };
	char *socket_path = NULL;
	if (pl_core_conf_load(config, &core, error) == 0) {
		if (core.control_socket)
			socket_path = pl_strdup(core.control_socket);
		else if (core.storage_path)
			socket_path = pl_asprintf("%s/parleyd.sock", core.storage_path);
		else
			pl_error(error, -EINVAL, "%s names no control socket", config->path);
	}
	pl_core_conf_free(&core);
	pl_config_free(config);
	return socket_path;
}

/* One line from stream without its line end, or NULL at EOF / when the
 * line is too long (*too_long set). */
static char *read_line(FILE *stream, bool *too_long)
{
	char *line = NULL;
	size_t capacity = 0;
	*too_long = false;
	ssize_t n = getline(&line, &capacity, stream);
	if (n < 0) {
		free(line);
		return NULL;
	}
	if ((size_t)n > MAX_PASSWORD_LINE) {
		explicit_bzero(line, (size_t)n);
		free(line);
		*too_long = true;
		return NULL;
	}
	line[strcspn(line, "\r\n")] = '\0';
	return line;
}

static void free_secret(char *secret)
{
	if (secret) {
		explicit_bzero(secret, strlen(secret));
		free(secret);
	}
}

/* The password from the terminal (asked twice, without echo) or from the
 * first line of standard input. NULL after reporting why. */
static char *read_password(void)
{
	struct termios saved;
	bool too_long;
	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved) != 0) {
		char *password = read_line(stdin, &too_long);
		if (!password)
			fprintf(stderr, "parleyctl: %s\n",
				too_long ? "the password line is too long"
					 : "no password on standard input");
		return password;
	}
	struct termios quiet = saved;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	quiet.c_lflag |= ECHONL;
	fprintf(stderr, "Password: ");
	fflush(stderr);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	char *first = read_line(stdin, &too_long);
	char *second = NULL;
	if (first) {
		fprintf(stderr, "Again: ");
		fflush(stderr);
		second = read_line(stdin, &too_long);
	}
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
	char *password = NULL;
	if (!first || !second)
		fprintf(stderr, "parleyctl: %s\n",
			too_long ? "the password is too long" : "no password given");
	else if (strcmp(first, second) != 0)
		fprintf(stderr, "parleyctl: the passwords differ\n");
	else
		password = pl_strdup(first);
	free_secret(first);
	free_secret(second);
	return password;
}

/* The daemon runs elsewhere (another directory, maybe), so a relative
 * backup path is made absolute here, where the user meant it. */
static char *absolute_path(const char *path)
{
	if (path[0] == '/')
		return pl_strdup(path);
	char *dir_copy = pl_strdup(path), *base_copy = pl_strdup(path);
	char resolved[PATH_MAX];
	char *result = NULL;
	if (realpath(dirname(dir_copy), resolved))
		result = pl_asprintf("%s%s%s", resolved, strcmp(resolved, "/") == 0 ? "" : "/",
				     basename(base_copy));
	free(dir_copy);
	free(base_copy);
	return result;
}

/* A connected socket, or -1 with errno. */
static int connect_to(const char *path)
{
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(address.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(address.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

static int unreachable(const char *socket_path)
{
	return fail(EXIT_UNREACHABLE, "cannot connect to %s: %s \xe2\x80\x94 is parleyd running?",
		    socket_path, strerror(errno));
}

/* A JSON number must not have leading zeros; anything else stays a string. */
static bool is_json_number(const char *value)
{
	if (!*value || (value[0] == '0' && value[1] != '\0'))
		return false;
	for (const char *p = value; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	return true;
}

static void print_status_json(const char *body)
{
	printf("{");
	bool first = true;
	char *copy = pl_strdup(body);
	char *saveptr = NULL;
	for (char *line = strtok_r(copy, "\n", &saveptr); line;
	     line = strtok_r(NULL, "\n", &saveptr)) {
		char *colon = strchr(line, ':');
		if (!colon)
			continue;
		*colon = '\0';
		const char *value = colon + 1;
		while (*value == ' ')
			value++;
		printf("%s", first ? "" : ",");
		first = false;
		print_json_string(line);
		putchar(':');
		if (is_json_number(value))
			printf("%s", value);
		else
			print_json_string(value);
	}
	printf("}\n");
	free(copy);
}

static void print_users_json(const char *body)
{
	printf("{\"users\":[");
	char *copy = pl_strdup(body);
	char *saveptr = NULL;
	bool first = true;
	for (char *line = strtok_r(copy, "\n", &saveptr); line;
	     line = strtok_r(NULL, "\n", &saveptr)) {
		printf("%s", first ? "" : ",");
		first = false;
		print_json_string(line);
	}
	printf("]}\n");
	free(copy);
}

static const struct command {
	const char *name;
	int min_args, max_args;
	const char *arguments; /* for the usage message */
} commands[] = {
	{ "adduser", 1, 1, "JID" },     { "passwd", 1, 1, "JID" }, { "deluser", 1, 1, "JID" },
	{ "users", 0, 1, "[HOST]" },    { "status", 0, 0, "" },    { "backup", 1, 1, "FILE" },
	{ "reload", 0, 0, "" },         { "stop", 0, 0, "" },       { "s2s", 0, 0, "" },
	/* Served by modules (the daemon says so if the module is not loaded). */
	{ "delete-archive", 1, 1, "JID" },
	{ "upload", 1, 2, "list [JID] | delete SLOT" },
};

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < PL_ARRAY_LEN(commands); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

/* Client-side check of an account JID, so a typo fails before any
 * password is asked for. The daemon checks again (and knows the hosts). */
static bool account_jid_ok(const char *text)
{
	struct pl_jid jid;
	enum pl_jid_error e = pl_jid_parse(text, &jid);
	bool fits = e == PL_JID_OK && jid.local && !jid.resource;
	if (e == PL_JID_OK)
		pl_jid_free(&jid);
	if (!fits)
		fail(EXIT_USAGE, "invalid JID '%s': %s", text,
		     e == PL_JID_OK ? "an account is user@host, without a resource"
				    : pl_jid_strerror(e));
	return fits;
}

static bool send_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		/* MSG_NOSIGNAL: a daemon that closes early (request too long)
		 * must give an error message, not a silent SIGPIPE death. */
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		data += n;
		len -= (size_t)n;
	}
	return true;
}

/* Sends the request and collects the whole answer (the daemon closes
 * after it). Returns the exit status, having printed the outcome. */
static int exchange(int fd, const char *command, const struct pl_buf *request)
{
	if (!send_all(fd, request->data, request->len))
		return fail(EXIT_UNREACHABLE, "cannot send the request: %s", strerror(errno));
	struct pl_buf response = { 0 };
	char chunk[4096];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		pl_buf_append(&response, chunk, (size_t)n);
	}
	int status = EXIT_OK;
	char *body = response.data ? strchr(response.data, '\n') : NULL;
	if (body)
		*body++ = '\0';
	if (!body)
		status = fail(EXIT_UNREACHABLE, "parleyd closed the connection without an answer");
	else if (strncmp(response.data, "error ", 6) == 0)
		status = fail(EXIT_REFUSED, "%s", response.data + 6);
	else if (strcmp(response.data, "ok") != 0)
		status = fail(EXIT_REFUSED, "unexpected answer: %s", response.data);
	else if (json_output && strcmp(command, "status") == 0)
		print_status_json(body);
	else if (json_output && strcmp(command, "users") == 0)
		print_users_json(body);
	else if (json_output)
		printf("{\"ok\":true}\n");
	else
		fputs(body, stdout);
	pl_buf_free(&response);
	return status;
}

static int run(const char *socket_option, const char *config_option, const char *command,
	       char **args, int arg_count)
{
	bool account_command = strcmp(command, "adduser") == 0 ||
			       strcmp(command, "passwd") == 0 || strcmp(command, "deluser") == 0;
	bool needs_password = strcmp(command, "adduser") == 0 || strcmp(command, "passwd") == 0;
	if (account_command && !account_jid_ok(args[0]))
		return EXIT_USAGE;

	char *socket_path = NULL, *error = NULL;
	if (socket_option) {
		socket_path = pl_strdup(socket_option);
	} else {
		socket_path = socket_from_config(config_option, &error);
		if (!socket_path) {
			int status = fail(EXIT_USAGE, "%s", error ? error : "no control socket");
			free(error);
			return status;
		}
	}

	int status = EXIT_OK;
	struct pl_buf request = { 0 };
	char *password = NULL;
	pl_ctl_encode_field(&request, command);
	for (int i = 0; i < arg_count; i++) {
		pl_buf_puts(&request, " ");
		if (strcmp(command, "backup") == 0) {
			char *path = absolute_path(args[i]);
			if (!path) {
				status = fail(EXIT_USAGE, "cannot resolve the directory of %s: %s",
					      args[i], strerror(errno));
				goto out;
			}
			pl_ctl_encode_field(&request, path);
			free(path);
		} else {
			pl_ctl_encode_field(&request, args[i]);
		}
	}

	if (needs_password) {
		/* Make sure someone is listening before asking for a password,
		 * but do not hold the connection while a human types: the
		 * daemon drops idle connections. */
		int probe = connect_to(socket_path);
		if (probe < 0) {
			status = unreachable(socket_path);
			goto out;
		}
		close(probe);
		password = read_password();
		if (!password) {
			status = EXIT_USAGE;
			goto out;
		}
		pl_buf_puts(&request, " ");
		pl_ctl_encode_field(&request, password);
	}
	pl_buf_puts(&request, "\n");
	if (request.len > PL_CTL_MAX_REQUEST) {
		status = fail(EXIT_USAGE, "the request is too long (at most %d bytes encoded)",
			      PL_CTL_MAX_REQUEST);
		goto out;
	}

	int fd = connect_to(socket_path);
	if (fd < 0) {
		status = unreachable(socket_path);
		goto out;
	}
	status = exchange(fd, command, &request);
	close(fd);
out:
	free_secret(password);
	if (request.data)
		explicit_bzero(request.data, request.len);
	pl_buf_free(&request);
	free(socket_path);
	return status;
}

int main(int argc, char **argv)
{
	static const struct option long_options[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *socket_option = NULL, *config_option = NULL;
	int option;
	/* "+": options stop at the command, so a FILE or JID starting with
	 * '-' is not taken for an option. */
	while ((option = getopt_long(argc, argv, "+s:c:jVh", long_options, NULL)) != -1) {
		switch (option) {
		case 's': socket_option = optarg; break;
		case 'c': config_option = optarg; break;
		case 'j': json_output = true; break;
		case 'V': printf("parleyctl %s\n", PACKAGE_VERSION); return EXIT_OK;
		case 'h': usage(stdout); return EXIT_OK;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (socket_option && config_option) {
		fprintf(stderr, "parleyctl: -s and -c exclude each other\n");
		return EXIT_USAGE;
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *command = argv[optind];
	char **args = argv + optind + 1;
	int arg_count = argc - optind - 1;
	const struct command *known = find_command(command);
	if (!known) {
		fprintf(stderr, "parleyctl: unknown command '%s'\n", command);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (arg_count < known->min_args || arg_count > known->max_args) {
		fprintf(stderr, "parleyctl: usage: parleyctl [options] %s%s%s\n", known->name,
			*known->arguments ? " " : "", known->arguments);
		return EXIT_USAGE;
	}
	int status = run(socket_option, config_option, command, args, arg_count);
	/* The configuration parser's globals, so leak checkers stay quiet. */
	xmlCleanupParser();
	return status;
}
