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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <libxml/parser.h>

enum { EXIT_OK = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

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
		"  status           uptime, sessions, users, modules, store\n"
		"  backup FILE      online compacted copy of the store into FILE\n"
		"  reload           re-read the configuration (as SIGHUP)\n"
		"  stop             shut parleyd down cleanly\n");
}

static void print_json_string(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

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
	}
	fprintf(stderr, "parleyctl: %s\n", message);
	free(message);
	return code;
}

static char *socket_from_config(const char *path, char **error)
{
	struct pl_config *config;
	int rc = path ? pl_config_load_file(path, &config, error)
		      : pl_config_load_memory(pl_config_embedded_default,
					      strlen(pl_config_embedded_default),
					      "(embedded default)", &config, error);
	if (rc)
		return NULL;
	struct pl_core_conf core;
	char *socket_path = NULL;
	if (pl_core_conf_load(config, &core, error) == 0) {
		socket_path = pl_strdup(core.control_socket);
		pl_core_conf_free(&core);
	}
	pl_config_free(config);
	return socket_path;
}

static char *read_password(void)
{
	char first[1100], second[1100];
	if (isatty(STDIN_FILENO)) {
		struct termios saved, quiet;
		tcgetattr(STDIN_FILENO, &saved);
		quiet = saved;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		fprintf(stderr, "Password: ");
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
		char *a = fgets(first, sizeof(first), stdin);
		fprintf(stderr, "\nAgain: ");
		char *b = a ? fgets(second, sizeof(second), stdin) : NULL;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
		fprintf(stderr, "\n");
		if (!a || !b)
			return NULL;
		if (strcmp(first, second) != 0) {
			fprintf(stderr, "parleyctl: the passwords differ\n");
			return NULL;
		}
	} else if (!fgets(first, sizeof(first), stdin)) {
		fprintf(stderr, "parleyctl: no password on standard input\n");
		return NULL;
	}
	first[strcspn(first, "\r\n")] = '\0';
	return pl_strdup(first);
}

static char *absolute_path(const char *path)
{
	if (path[0] == '/')
		return pl_strdup(path);
	char *dir_copy = pl_strdup(path), *base_copy = pl_strdup(path);
	char resolved[PATH_MAX];
	char *result = NULL;
	if (realpath(dirname(dir_copy), resolved))
		result = pl_asprintf("%s/%s", resolved, basename(base_copy));
	free(dir_copy);
	free(base_copy);
	return result;
}

static int connect_to(const char *path)
{
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(address.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(address.sun_path, path);
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

static void print_status_json(const char *body)
{
	printf("{");
	bool first = true;
	char *copy = pl_strdup(body);
	for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n")) {
		char *colon = strstr(line, ": ");
		if (!colon)
			colon = line + strlen(line) - 1;
		*colon = '\0';
		const char *value = colon[1] ? colon + 2 : "";
		printf("%s", first ? "" : ",");
		first = false;
		print_json_string(line);
		putchar(':');
		bool numeric = *value != '\0';
		for (const char *p = value; *p; p++)
			if (*p < '0' || *p > '9')
				numeric = false;
		if (numeric)
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
	bool first = true;
	for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n")) {
		printf("%s", first ? "" : ",");
		first = false;
		print_json_string(line);
	}
	printf("]}\n");
	free(copy);
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
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *command = argv[optind];
	char **args = argv + optind + 1;
	int arg_count = argc - optind - 1;

	static const struct { const char *name; int min, max; } commands[] = {
		{ "adduser", 1, 1 }, { "passwd", 1, 1 }, { "deluser", 1, 1 }, { "users", 0, 1 },
		{ "status", 0, 0 },  { "backup", 1, 1 }, { "reload", 0, 0 },  { "stop", 0, 0 },
	};
	size_t which = PL_ARRAY_LEN(commands);
	for (size_t i = 0; i < PL_ARRAY_LEN(commands); i++)
		if (strcmp(commands[i].name, command) == 0)
			which = i;
	if (which == PL_ARRAY_LEN(commands)) {
		fprintf(stderr, "parleyctl: unknown command '%s'\n", command);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (arg_count < commands[which].min || arg_count > commands[which].max) {
		usage(stderr);
		return EXIT_USAGE;
	}

	struct pl_buf request = { 0 };
	pl_ctl_encode_field(&request, command);
	int status = EXIT_OK;
	char *extra = NULL;
	bool account_command = strcmp(command, "adduser") == 0 ||
			       strcmp(command, "passwd") == 0 || strcmp(command, "deluser") == 0;
	if (account_command) {
		struct pl_jid jid;
		enum pl_jid_error e = pl_jid_parse(args[0], &jid);
		bool fits = e == PL_JID_OK && jid.local && !jid.resource;
		pl_jid_free(&jid);
		if (!fits) {
			status = fail(EXIT_USAGE, "invalid JID '%s': %s", args[0],
				      e == PL_JID_OK ? "an account is user@host, without a resource"
						     : pl_jid_strerror(e));
			goto out;
		}
	}
	for (int i = 0; i < arg_count; i++) {
		pl_buf_puts(&request, " ");
		if (strcmp(command, "backup") == 0) {
			extra = absolute_path(args[i]);
			if (!extra) {
				status = fail(EXIT_USAGE, "cannot resolve %s: %s", args[i],
					      strerror(errno));
				goto out;
			}
			pl_ctl_encode_field(&request, extra);
		} else {
			pl_ctl_encode_field(&request, args[i]);
		}
	}
	if (strcmp(command, "adduser") == 0 || strcmp(command, "passwd") == 0) {
		char *password = read_password();
		if (!password) {
			status = EXIT_USAGE;
			goto out;
		}
		pl_buf_puts(&request, " ");
		pl_ctl_encode_field(&request, password);
		memset(password, 0, strlen(password));
		free(password);
	}
	pl_buf_puts(&request, "\n");

	char *socket_path = NULL, *error = NULL;
	if (socket_option)
		socket_path = pl_strdup(socket_option);
	else
		socket_path = socket_from_config(config_option, &error);
	if (!socket_path) {
		status = fail(EXIT_USAGE, "%s", error ? error : "no control socket");
		free(error);
		goto out;
	}
	int fd = connect_to(socket_path);
	if (fd < 0) {
		status = fail(EXIT_UNREACHABLE, "cannot connect to %s: %s - is parleyd running?",
			      socket_path, strerror(errno));
		free(socket_path);
		goto out;
	}
	free(socket_path);
	size_t sent = 0;
	while (sent < request.len) {
		ssize_t n = write(fd, request.data + sent, request.len - sent);
		if (n <= 0)
			break;
		sent += (size_t)n;
	}
	struct pl_buf response = { 0 };
	char chunk[4096];
	ssize_t n;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		pl_buf_append(&response, chunk, (size_t)n);
	close(fd);

	char *body = response.data ? strchr(response.data, '\n') : NULL;
	if (body)
		*body++ = '\0';
	if (!response.data || !body) {
		status = fail(EXIT_UNREACHABLE, "parleyd closed the connection without an answer");
	} else if (strncmp(response.data, "error ", 6) == 0) {
		status = fail(EXIT_REFUSED, "%s", response.data + 6);
	} else if (strcmp(response.data, "ok") != 0) {
		status = fail(EXIT_REFUSED, "unexpected answer: %s", response.data);
	} else if (json_output && strcmp(command, "status") == 0) {
		print_status_json(body);
	} else if (json_output && strcmp(command, "users") == 0) {
		print_users_json(body);
	} else if (json_output) {
		printf("{\"ok\":true}\n");
	} else {
		fputs(body, stdout);
	}
	pl_buf_free(&response);
out:
	free(extra);
	if (request.data)
		memset(request.data, 0, request.len);
	pl_buf_free(&request);
	xmlCleanupParser();
	return status;
}
