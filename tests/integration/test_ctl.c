/* parleyctl against a real parleyd: every command, its errors, JSON
 * output, a daemon that is not running, and a restart after kill -9 that
 * keeps the accounts (they were acknowledged only once durable). */
#include "harness.h"
#include "../tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int ctl(const struct ph_server *s, const char *a, const char *b, const char *input,
	       char **out, char **err)
{
	const char *args[] = { a, b, NULL };
	return ph_ctl(s, args, input, out, err);
}

static void expect_error(const struct ph_server *s, const char *command, const char *jid,
			 const char *input, int expected_status, const char *needle)
{
	char *err = NULL;
	int status = ctl(s, command, jid, input, NULL, &err);
	is_int(status, expected_status, "%s %s fails with exit status %d", command, jid,
	       expected_status);
	has_str(err, needle, "%s %s: the error is clear", command, jid);
	free(err);
}

int main(void)
{
	struct ph_server s;
	ph_server_init(&s, NULL);
	if (!ok(ph_server_start(&s, NULL) == 0, "parleyd starts"))
		return done_testing();

	char *out = NULL, *err = NULL;
	is_int(ctl(&s, "status", NULL, NULL, &out, NULL), 0, "status answers");
	has_str(out, "users: 0", "status: no users yet");
	has_str(out, "hosts: localhost", "status: the host");
	has_str(out, "modules: disco ping private register time vcard version", "status: the loaded modules");
	has_str(out, "uptime: ", "status: uptime");
	free(out);

	is_int(ctl(&s, "adduser", "alice@localhost", "wonderland\n", NULL, &err), 0,
	       "adduser alice@localhost");
	free(err);
	is_int(ctl(&s, "adduser", "Bob@LocalHost", "builder\n", NULL, NULL), 0,
	       "adduser with upper case");
	is_int(ctl(&s, "users", NULL, NULL, &out, NULL), 0, "users answers");
	ok(out && strcmp(out, "alice@localhost\nbob@localhost\n") == 0,
	   "users lists both, normalised and sorted");
	free(out);
	is_int(ctl(&s, "users", "localhost", NULL, &out, NULL), 0, "users HOST answers");
	has_str(out, "alice@localhost", "users HOST lists the host's users");
	free(out);

	expect_error(&s, "adduser", "alice@localhost", "again\n", 1, "already exists");
	expect_error(&s, "adduser", "@localhost", "x\n", 2, "invalid JID");
	expect_error(&s, "adduser", "alice@", "x\n", 2, "invalid JID");
	expect_error(&s, "adduser", "alice@localhost/res", "x\n", 2, "without a resource");
	expect_error(&s, "adduser", "alice@nothost.example", "x\n", 1,
		     "not a host of this server");
	expect_error(&s, "adduser", "carol@localhost", "\n", 1, "password");

	is_int(ctl(&s, "passwd", "alice@localhost", "new password\n", NULL, NULL), 0,
	       "passwd alice@localhost");
	expect_error(&s, "passwd", "nobody@localhost", "x\n", 1, "no such user");
	is_int(ctl(&s, "deluser", "bob@localhost", NULL, NULL, NULL), 0, "deluser bob");
	expect_error(&s, "deluser", "bob@localhost", NULL, 1, "no such user");
	ctl(&s, "users", NULL, NULL, &out, NULL);
	ok(out && !strstr(out, "bob@") && strstr(out, "alice@"), "bob is gone, alice stays");
	free(out);

	char backup[400];
	snprintf(backup, sizeof(backup), "%s/backup.mdb", s.dir);
	is_int(ctl(&s, "backup", backup, NULL, NULL, &err), 0, "backup FILE");
	free(err);
	struct stat st;
	ok(stat(backup, &st) == 0 && st.st_size > 0, "the backup file exists and is not empty");
	expect_error(&s, "backup", backup, NULL, 1, "exists");

	is_int(ctl(&s, "reload", NULL, NULL, NULL, NULL), 0, "reload");
	const char *json_args[] = { "--json", "status", NULL };
	is_int(ph_ctl(&s, json_args, NULL, &out, NULL), 0, "--json status");
	ok(out && out[0] == '{' && strstr(out, "\"uptime\":") && strstr(out, "\"users\":1"),
	   "--json status is a JSON object with numbers");
	free(out);
	const char *unknown[] = { "frobnicate", NULL };
	is_int(ph_ctl(&s, unknown, NULL, NULL, NULL), 2, "an unknown command is a usage error");

	/* kill -9, then a restart over the stale socket; alice must remain. */
	ph_server_kill(&s);
	expect_error(&s, "status", NULL, NULL, 3, "is parleyd running?");
	ok(ph_server_start(&s, NULL) == 0, "parleyd restarts over the stale socket after kill -9");
	ctl(&s, "users", NULL, NULL, &out, NULL);
	has_str(out, "alice@localhost", "alice survived kill -9");
	free(out);
	is_int(ctl(&s, "stop", NULL, NULL, NULL, NULL), 0, "stop");
	is_int(ph_server_stop(&s), 0, "parleyd exits 0 after parleyctl stop");
	ph_server_cleanup(&s);
	return done_testing();
}
