/* Federation with a real Prosody (Debian's package), a private instance
 * under the test's temporary directory on free loopback ports: a Parley
 * user (alice@a.example) and a Prosody user (bob@p.test) exchange messages
 * both ways, complete the subscription handshake to 'both', see each
 * other come online and go offline, and query each other's server.
 * Parley reaches p.test through a <remote route>; Prosody, which has no
 * static routes, finds a.example through SRV records served by the test's
 * DNS responder (its libunbound forwards there; not a .test name, which
 * unbound answers locally as RFC 6761 special-use). Authentication is
 * dialback over TLS with self-signed certificates. Skipped when prosody
 * is not installed. */
#include "dns_responder.h"
#include "harness.h"
#include "raw_client.h"
#include "../tap.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROSODY "/usr/bin/prosody"
#define PROSODYCTL "/usr/bin/prosodyctl"

struct prosody {
	pid_t pid;
	char dir[300], config[350], log[350];
	int c2s_tls_port, s2s_port;
};

static bool write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return false;
	fputs(text, f);
	return fclose(f) == 0;
}

static bool prosody_configure(struct prosody *p, const char *parent, int dns_port)
{
	snprintf(p->dir, sizeof(p->dir), "%s/prosody", parent);
	snprintf(p->config, sizeof(p->config), "%s/prosody.cfg.lua", p->dir);
	snprintf(p->log, sizeof(p->log), "%s/prosody.log", p->dir);
	char data[400];
	snprintf(data, sizeof(data), "%s/data", p->dir);
	if (mkdir(p->dir, 0755) != 0 || mkdir(data, 0755) != 0)
		return false;
	char script[1024];
	snprintf(script, sizeof(script),
		 "cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
		 " -days 2 -subj /CN=p.test -addext subjectAltName=DNS:p.test -keyout p.key"
		 " -out p.crt 2>/dev/null",
		 p->dir);
	const char *argv[] = { "/bin/sh", "-c", script, NULL };
	if (ph_run(argv, NULL, NULL, NULL, 30000) != 0)
		return false;
	p->c2s_tls_port = ph_free_port();
	int c2s_port = ph_free_port();
	p->s2s_port = ph_free_port();
	char config[4096];
	snprintf(config, sizeof(config),
		 "pidfile = \"%s/prosody.pid\"\n"
		 "data_path = \"%s\"\n"
		 "log = { debug = \"%s\" }\n"
		 "daemonize = false\n"
		 "run_as_root = true\n"
		 "interfaces = { \"127.0.0.1\" }\n"
		 "c2s_ports = { %d }\n"
		 "c2s_direct_tls_ports = { %d }\n"
		 "s2s_ports = { %d }\n"
		 "s2s_direct_tls_ports = { }\n"
		 "http_ports = { }\n"
		 "https_ports = { }\n"
		 "admin_socket = \"%s/admin.sock\"\n"
		 "modules_enabled = { \"roster\"; \"saslauth\"; \"tls\"; \"dialback\"; \"disco\";"
		 " \"ping\"; \"version\"; \"offline\" }\n"
		 "s2s_secure_auth = false\n"
		 "s2s_require_encryption = true\n"
		 "authentication = \"internal_plain\"\n"
		 "unbound = { forward = \"127.0.0.1@%d\"; hoststxt = false; resolvconf = false }\n"
		 /* The default certificate too: the raw client's SNI is "localhost". */
		 "ssl = { certificate = \"%s/p.crt\"; key = \"%s/p.key\" }\n"
		 "VirtualHost \"p.test\"\n"
		 "  ssl = { certificate = \"%s/p.crt\"; key = \"%s/p.key\" }\n",
		 p->dir, data, p->log, c2s_port, p->c2s_tls_port, p->s2s_port, p->dir, dns_port,
		 p->dir, p->dir, p->dir, p->dir);
	return write_file(p->config, config);
}

static bool prosody_answers(void *arg)
{
	struct prosody *p = arg;
	struct raw_client *c = raw_client_connect_sni(p->c2s_tls_port, "p.test");
	raw_client_free(c);
	return c != NULL;
}

static bool prosody_start(struct prosody *p)
{
	p->pid = fork();
	if (p->pid < 0)
		return false;
	if (p->pid == 0) {
		char out[400];
		snprintf(out, sizeof(out), "%s/stdout", p->dir);
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(PROSODY, "prosody", "--config", p->config, (char *)NULL);
		_exit(127);
	}
	return ph_wait_for(prosody_answers, p, 15000);
}

static void prosody_stop(struct prosody *p)
{
	if (p->pid <= 0)
		return;
	kill(p->pid, SIGTERM);
	for (int i = 0; i < 100; i++) {
		if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
			p->pid = -1;
			return;
		}
		usleep(100000);
	}
	kill(p->pid, SIGKILL);
	waitpid(p->pid, NULL, 0);
	p->pid = -1;
}

static struct raw_client *login(int port, const char *domain, const char *user)
{
	struct raw_client *c = raw_client_connect_sni(port, domain);
	char password[64];
	snprintf(password, sizeof(password), "%s-secret", user);
	if (c && !raw_client_login(c, domain, user, password, "r")) {
		raw_client_free(c);
		return NULL;
	}
	return c;
}

/* The next element with both texts (attribute order is the sender's);
 * others with the first text are dropped on the way. */
static char *wait_both(struct raw_client *c, const char *first, const char *second)
{
	for (int i = 0; i < 20; i++) {
		char *element = raw_client_wait(c, first, 15000);
		if (!element || strstr(element, second))
			return element;
		free(element);
	}
	return NULL;
}

int main(void)
{
	if (access(PROSODY, X_OK) != 0 || access(PROSODYCTL, X_OK) != 0) {
		ok(1, "# SKIP prosody is not installed");
		return done_testing();
	}
	struct ph_server s;
	ph_server_init(&s, NULL);
	int s2s_port = ph_free_port();
	struct dns_record records[] = {
		{ "_xmpp-server._tcp.a.example", 33, 0, 0, s2s_port, "a.example" },
		{ "a.example", 1, 0, 0, 0, NULL },
	};
	struct dns_responder dns;
	if (!ok(dns_start(&dns, records, 2), "a DNS responder for a.example runs on loopback"))
		return done_testing();
	struct prosody p = { .pid = -1 };
	bool configured = prosody_configure(&p, s.dir, dns.port);
	ok(configured, "a private Prosody instance is configured (p.test)");
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "  <s2s address=\"127.0.0.1\" port=\"%d\" tls-port=\"0\" authentication=\"dialback\"/>\n"
		 "  <remote name=\"p.test\" route=\"127.0.0.1:%d\"/>\n",
		 s2s_port, p.s2s_port);
	char *config = ph_standard_config(&s, NULL, extra);
	char *patched = ph_replace(config, "<host name=\"localhost\"/>", "<host name=\"a.example\"/>");
	ph_server_write_config(&s, patched);
	free(patched);
	free(config);
	if (!ok(configured && prosody_start(&p), "prosody starts") ||
	    !ok(ph_server_start(&s, NULL) == 0, "parleyd starts (a.example)")) {
		prosody_stop(&p);
		dns_stop(&dns);
		return done_testing();
	}
	const char *register_bob[] = { PROSODYCTL, "--config", p.config, "register", "bob", "p.test",
				       "bob-secret", NULL };
	is_int(ph_run(register_bob, NULL, NULL, NULL, 30000), 0, "bob@p.test is registered");
	ph_add_user_at(&s, "alice", "a.example");
	struct raw_client *alice = login(s.c2s_tls_port, "a.example", "alice");
	struct raw_client *bob = login(p.c2s_tls_port, "p.test", "bob");
	if (!ok(alice && bob, "alice logs in to Parley and bob to Prosody"))
		goto out;
	raw_client_send(alice, "<presence/>");
	raw_client_send(bob, "<presence/>");

	raw_client_send(alice, "<message to='bob@p.test' type='chat' id='a1'><body>hello from Parley</body></message>");
	char *answer = raw_client_wait(bob, "hello from Parley", 15000);
	has_str(answer, "from='alice@a.example/r'", "bob (Prosody) gets alice's message");
	free(answer);
	raw_client_send(bob, "<message to='alice@a.example' type='chat' id='b1'><body>hello from Prosody</body></message>");
	answer = raw_client_wait(alice, "hello from Prosody", 15000);
	has_str(answer, "from='bob@p.test/r'", "alice (Parley) gets bob's message");
	free(answer);
	ok(ph_wait_log(&s, "a.example -> p.test authenticated with dialback", 5000),
	   "Parley's stream to Prosody authenticated with dialback");
	ok(ph_wait_log(&s, "incoming stream from p.test authenticated with dialback", 5000),
	   "and Prosody's stream to Parley too");

	raw_client_send(bob, "<iq type='get' to='a.example' id='bv'><query xmlns='jabber:iq:version'/></iq>");
	answer = raw_client_wait(bob, "id='bv'", 15000);
	has_str(answer, "<name>Parley</name>", "bob asks Parley's version");
	free(answer);
	raw_client_send(alice, "<iq type='get' to='p.test' id='av'><query xmlns='jabber:iq:version'/></iq>");
	answer = raw_client_wait(alice, "id='av'", 15000);
	has_str(answer, "<name>Prosody</name>", "alice asks Prosody's version");
	free(answer);

	/* The subscription handshake to 'both'. */
	raw_client_send(alice, "<presence to='bob@p.test' type='subscribe'/>");
	answer = raw_client_wait(bob, "type='subscribe'", 15000);
	has_str(answer, "from='alice@a.example'", "bob gets alice's subscription request");
	free(answer);
	raw_client_send(bob, "<presence to='alice@a.example' type='subscribed'/>");
	answer = raw_client_wait(alice, "type='subscribed'", 15000);
	has_str(answer, "from='bob@p.test'", "alice learns that bob approved");
	free(answer);
	answer = wait_both(alice, "<presence", "from='bob@p.test/r'");
	ok(answer && !strstr(answer, "type="), "and sees bob online");
	free(answer);
	raw_client_send(bob, "<presence to='alice@a.example' type='subscribe'/>");
	answer = raw_client_wait(alice, "type='subscribe'", 15000);
	has_str(answer, "from='bob@p.test'", "alice gets bob's request");
	free(answer);
	raw_client_send(alice, "<presence to='bob@p.test' type='subscribed'/>");
	answer = raw_client_wait(bob, "from='alice@a.example/r'", 15000);
	ok(answer != NULL, "bob sees alice online");
	free(answer);
	raw_client_send(alice, "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
	answer = raw_client_wait(alice, "id='r1'", 15000);
	has_str(answer, "subscription='both'", "alice's roster: bob, both");
	free(answer);
	raw_client_send(bob, "<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>");
	answer = raw_client_wait(bob, "id='r2'", 15000);
	has_str(answer, "subscription='both'", "bob's roster (Prosody): alice, both");
	free(answer);

	/* Offline. */
	raw_client_free(bob);
	bob = NULL;
	answer = wait_both(alice, "type='unavailable'", "from='bob@p.test/r'");
	ok(answer != NULL, "alice sees bob go offline");
	free(answer);
	bob = login(p.c2s_tls_port, "p.test", "bob");
	raw_client_send(bob, "<presence/>");
	answer = wait_both(alice, "<presence", "from='bob@p.test/r'");
	ok(answer && !strstr(answer, "type="), "and come back");
	free(answer);
	raw_client_free(alice);
	alice = NULL;
	answer = wait_both(bob, "type='unavailable'", "from='alice@a.example/r'");
	ok(answer != NULL, "bob sees alice go offline");
	free(answer);
out:
	raw_client_free(alice);
	raw_client_free(bob);
	is_int(ph_server_stop(&s), 0, "parleyd stops cleanly");
	prosody_stop(&p);
	dns_stop(&dns);
	ph_server_cleanup(&s);
	return done_testing();
}
