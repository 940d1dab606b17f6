/* XEP-0115 verification strings: the two worked examples of the XEP
 * (section 5.2, a simple client; 5.3, identities in two languages and an
 * extended form) hash to the values the XEP gives, and the order of the
 * elements does not matter. */
#include "caps.h"
#include "xml/stream.h"
#include "../tap.h"

#include <stdlib.h>
#include <string.h>

static char *hash_of(const char *xml)
{
	struct pl_xnode *query = pl_xml_parse_element(xml, strlen(xml), "jabber:client");
	char *hash = query ? pl_caps_hash(query) : NULL;
	pl_xnode_unref(&query);
	return hash;
}

int main(void)
{
	char *simple = hash_of("<query xmlns='http://jabber.org/protocol/disco#info'>"
			       "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
			       "<feature var='http://jabber.org/protocol/caps'/>"
			       "<feature var='http://jabber.org/protocol/disco#info'/>"
			       "<feature var='http://jabber.org/protocol/disco#items'/>"
			       "<feature var='http://jabber.org/protocol/muc'/></query>");
	is_str(simple, "QgayPKawpkPSDYmwT/WM94uAlu0=", "XEP-0115 5.2: the simple example");
	free(simple);
	char *shuffled = hash_of("<query xmlns='http://jabber.org/protocol/disco#info'>"
				 "<feature var='http://jabber.org/protocol/muc'/>"
				 "<feature var='http://jabber.org/protocol/disco#items'/>"
				 "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
				 "<feature var='http://jabber.org/protocol/disco#info'/>"
				 "<feature var='http://jabber.org/protocol/caps'/></query>");
	is_str(shuffled, "QgayPKawpkPSDYmwT/WM94uAlu0=", "the order of the elements does not matter");
	free(shuffled);
	char *complex = hash_of(
		"<query xmlns='http://jabber.org/protocol/disco#info'>"
		"<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
		"<identity xml:lang='el' category='client' name='\xce\xa8 0.11' type='pc'/>"
		"<feature var='http://jabber.org/protocol/caps'/>"
		"<feature var='http://jabber.org/protocol/disco#info'/>"
		"<feature var='http://jabber.org/protocol/disco#items'/>"
		"<feature var='http://jabber.org/protocol/muc'/>"
		"<x xmlns='jabber:x:data' type='result'>"
		"<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
		"<field var='ip_version'><value>ipv4</value><value>ipv6</value></field>"
		"<field var='os'><value>Mac</value></field>"
		"<field var='os_version'><value>10.5.1</value></field>"
		"<field var='software'><value>Psi</value></field>"
		"<field var='software_version'><value>0.11</value></field></x></query>");
	is_str(complex, "q07IKJEyjvHSyhy//CH0CxmKi8w=", "XEP-0115 5.3: languages and an extended form");
	free(complex);
	return done_testing();
}
