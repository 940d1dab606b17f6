/* Loading parley.xml: the file is read here (so I/O errors carry errno and
 * the path), libxml2 parses it with no network access and no entity
 * substitution, a DOCTYPE stops the parse at once (a configuration has no
 * business with DTDs or entities), and the embedded RELAX NG schema
 * validates the tree. libxml2's messages are captured, never printed; when
 * validation fails, each child of <parley> is validated again on its own
 * against the schema, because libxml2 explains errors inside an
 * <interleave> only as "Extra element in interleave", and the schema is
 * consulted to say what an attribute expects. The valid tree is then
 * flattened into sections of key/value entries that keep their line
 * numbers for the typed option parsers' messages. */
#include "config.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libxml/SAX2.h>
#include <libxml/parser.h>
#include <libxml/relaxng.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlversion.h>

extern const char pl_config_schema[];

/* libxml2 2.12 made the structured error handler take a const error. */
#if LIBXML_VERSION >= 21200
typedef const xmlError xml_error_t;
#else
typedef xmlError xml_error_t;
#endif

#define RNG_NS "http://relaxng.org/ns/structure/1.0"
#define ANNOTATION_NS "http://relaxng.org/ns/compatibility/annotations/1.0"

/* A configuration is a few kilobytes; anything this big is a mistake
 * (a log file, a disk image) better refused than parsed. */
#define MAX_CONFIG_BYTES (16u << 20)
/* More than a handful of errors is noise: the first ones are the fix. */
#define MAX_REPORTED_ERRORS 5

/* Collects libxml2's errors as "FILE:LINE: message" lines. Errors that only
 * echo an earlier one ("element parley failed to validate content") are
 * kept apart and reported only when nothing more precise was said. */
struct error_sink {
	const char *label;
	xmlDoc *schema; /* to explain attribute errors; NULL while parsing */
	struct pl_buf precise;
	struct pl_buf vague;
	int precise_count;
	int vague_count;
	long doctype_line; /* nonzero once a DOCTYPE stopped the parser */
};

static void sink_add(struct error_sink *sink, bool vague, long line, const char *message)
{
	struct pl_buf *text = vague ? &sink->vague : &sink->precise;
	int *count = vague ? &sink->vague_count : &sink->precise_count;
	if (++*count > MAX_REPORTED_ERRORS)
		return;
	if (text->len)
		pl_buf_puts(text, "\n");
	size_t len = strlen(message);
	while (len > 0 && (message[len - 1] == '\n' || message[len - 1] == ' '))
		len--;
	pl_buf_printf(text, "%s:%ld: %.*s", sink->label, line, (int)len, message);
}

/* The best message collected so far, or NULL. */
static const char *sink_message(const struct error_sink *sink)
{
	if (sink->precise.len)
		return sink->precise.data;
	return sink->vague.len ? sink->vague.data : NULL;
}

static void sink_free(struct error_sink *sink)
{
	pl_buf_free(&sink->precise);
	pl_buf_free(&sink->vague);
}

/* ---- reading the schema, to explain errors ------------------------------ */

static bool is_rng(const xmlNode *node, const char *name)
{
	return node && node->type == XML_ELEMENT_NODE && node->ns &&
	       strcmp((const char *)node->ns->href, RNG_NS) == 0 &&
	       (!name || strcmp((const char *)node->name, name) == 0);
}

static bool has_name(const xmlNode *node, const char *name)
{
	xmlChar *value = xmlGetProp(node, (const xmlChar *)"name");
	bool same = value && strcmp((const char *)value, name) == 0;
	xmlFree(value);
	return same;
}

static xmlNode *first_rng_child(const xmlNode *node, const char *name)
{
	for (xmlNode *c = node ? node->children : NULL; c; c = c->next)
		if (is_rng(c, name))
			return c;
	return NULL;
}

static xmlNode *find_define(xmlDoc *schema, const char *name)
{
	for (xmlNode *d = xmlDocGetRootElement(schema)->children; d; d = d->next)
		if (is_rng(d, "define") && has_name(d, name))
			return d;
	return NULL;
}

/* The <element name="..."> pattern of an element, wherever it is defined
 * (element names are unique in our schema). */
static xmlNode *find_element_pattern(xmlNode *from, const char *name)
{
	for (xmlNode *c = from->children; c; c = c->next) {
		if (!is_rng(c, NULL))
			continue;
		if (strcmp((const char *)c->name, "element") == 0 && has_name(c, name))
			return c;
		xmlNode *found = find_element_pattern(c, name);
		if (found)
			return found;
	}
	return NULL;
}

/* Visits the <attribute name="..."> patterns of one element, not those of
 * the elements nested in it. */
static void each_attribute(xmlNode *pattern, void (*visit)(xmlNode *, void *), void *arg)
{
	for (xmlNode *c = pattern->children; c; c = c->next) {
		if (!is_rng(c, NULL) || strcmp((const char *)c->name, "element") == 0)
			continue;
		if (strcmp((const char *)c->name, "attribute") == 0) {
			xmlChar *name = xmlGetProp(c, (const xmlChar *)"name");
			if (name)
				visit(c, arg);
			xmlFree(name);
			continue;
		}
		each_attribute(c, visit, arg);
	}
}

struct attribute_search {
	const char *name;
	xmlNode *found;
	struct pl_buf known;
};

static void note_attribute(xmlNode *attribute, void *arg)
{
	struct attribute_search *search = arg;
	xmlChar *name = xmlGetProp(attribute, (const xmlChar *)"name");
	if (strcmp((const char *)name, search->name) == 0)
		search->found = attribute;
	pl_buf_printf(&search->known, "%s%s", search->known.len ? ", " : "", (const char *)name);
	xmlFree(name);
}

/* What a value pattern accepts, in words: its a:documentation, or the
 * list of its <value>s. Follows one <ref>. NULL when it cannot say. */
static char *expected_value(xmlDoc *schema, xmlNode *pattern)
{
	for (int hops = 0; pattern && hops < 4; hops++) {
		for (xmlNode *c = pattern->children; c; c = c->next) {
			if (c->type == XML_ELEMENT_NODE && c->ns &&
			    strcmp((const char *)c->ns->href, ANNOTATION_NS) == 0 &&
			    strcmp((const char *)c->name, "documentation") == 0) {
				xmlChar *text = xmlNodeGetContent(c);
				char *copy = pl_strdup((const char *)text);
				xmlFree(text);
				return copy;
			}
		}
		xmlNode *choice = first_rng_child(pattern, "choice");
		if (choice && first_rng_child(choice, "value")) {
			struct pl_buf list = { 0 };
			pl_buf_puts(&list, "one of: ");
			for (xmlNode *v = choice->children; v; v = v->next) {
				if (!is_rng(v, "value"))
					continue;
				xmlChar *text = xmlNodeGetContent(v);
				pl_buf_printf(&list, "%s%s", list.len > 8 ? ", " : "",
					      (const char *)text);
				xmlFree(text);
			}
			return pl_buf_take(&list);
		}
		xmlNode *ref = first_rng_child(pattern, "ref");
		if (!ref)
			return NULL;
		xmlChar *name = xmlGetProp(ref, (const xmlChar *)"name");
		pattern = name ? find_define(schema, (const char *)name) : NULL;
		xmlFree(name);
	}
	return NULL;
}

/* "Invalid attribute X for element Y" covers both an unknown attribute and
 * a bad value; the schema tells which, and what would have been right. */
static char *explain_attribute(xmlDoc *schema, xmlNode *element, const char *attribute)
{
	xmlNode *pattern = find_element_pattern(xmlDocGetRootElement(schema),
						(const char *)element->name);
	if (!pattern)
		return NULL;
	struct attribute_search search = { .name = attribute };
	each_attribute(pattern, note_attribute, &search);
	char *message;
	if (!search.found) {
		message = pl_asprintf("<%s> has no attribute '%s' (known: %s)", element->name,
				      attribute, search.known.len ? search.known.data : "none");
	} else {
		xmlChar *value = xmlGetProp(element, (const xmlChar *)attribute);
		char *expected = expected_value(schema, search.found);
		bool is_list = expected && strncmp(expected, "one of:", 7) == 0;
		message = pl_asprintf("<%s> %s: expected %s%s got \"%s\"", element->name, attribute,
				      expected ? expected : "another value", is_list ? ";" : ",",
				      value ? (const char *)value : "");
		free(expected);
		xmlFree(value);
	}
	pl_buf_free(&search.known);
	return message;
}

/* "Element host has extra content: cert" (str1 the container, str2 the
 * intruder, or "text" when the intruder is text). */
static char *explain_extra_content(const xmlNode *node, const char *container,
				   const char *intruder)
{
	if (!container || !intruder)
		return NULL;
	if (strcmp(intruder, "text") == 0 && strcmp((const char *)node->name, "text") != 0)
		return pl_asprintf("<%s> takes no text", container);
	return pl_asprintf("<%s> has no element <%s> here", container, intruder);
}

struct attribute_summary {
	xmlDoc *schema;
	const xmlNode *element;
	struct pl_buf text;
};

static void summarise_attribute(xmlNode *attribute, void *arg)
{
	struct attribute_summary *summary = arg;
	xmlChar *name = xmlGetProp(attribute, (const xmlChar *)"name");
	xmlChar *value = xmlGetProp(summary->element, name);
	char *expected = expected_value(summary->schema, attribute);
	pl_buf_printf(&summary->text, "%s%s expects %s", summary->text.len ? "; " : "",
		      (const char *)name, expected ? expected : "a value");
	if (value)
		pl_buf_printf(&summary->text, ", got \"%s\"", (const char *)value);
	else
		pl_buf_puts(&summary->text, ", missing");
	free(expected);
	xmlFree(value);
	xmlFree(name);
}

/* "Element module failed to validate attributes" names no attribute; list
 * what each declared attribute expects next to what it got. */
static char *explain_attributes(xmlDoc *schema, const xmlNode *element)
{
	xmlNode *pattern = find_element_pattern(xmlDocGetRootElement(schema),
						(const char *)element->name);
	if (!pattern)
		return NULL;
	struct attribute_summary summary = { .schema = schema, .element = element };
	each_attribute(pattern, summarise_attribute, &summary);
	char *message = summary.text.len ? pl_asprintf("<%s> attributes: %s", element->name,
						       summary.text.data)
					 : NULL;
	pl_buf_free(&summary.text);
	return message;
}

/* ---- capturing libxml2's errors ------------------------------------------ */

static bool is_vague(const xml_error_t *error)
{
	switch (error->code) {
	case XML_RELAXNG_ERR_CONTENTVALID:
	case XML_RELAXNG_ERR_ATTRVALID:
	case XML_RELAXNG_ERR_INTEREXTRA:
	case XML_RELAXNG_ERR_INTERSEQ:
	case XML_RELAXNG_ERR_INTERNODATA:
	case XML_RELAXNG_ERR_NOELEM:
		return true;
	default:
		return false;
	}
}

/* Our own wording for the validity errors libxml2 words vaguely or
 * backwards; NULL for the others. */
static char *explain(const struct error_sink *sink, const xml_error_t *error, xmlNode *node)
{
	switch (error->code) {
	case XML_RELAXNG_ERR_INVALIDATTR:
		return error->str1 && sink->schema
			       ? explain_attribute(sink->schema, node, error->str1) : NULL;
	case XML_RELAXNG_ERR_ATTRVALID:
		return sink->schema ? explain_attributes(sink->schema, node) : NULL;
	case XML_RELAXNG_ERR_EXTRACONTENT:
		return explain_extra_content(node, error->str1, error->str2);
	case XML_RELAXNG_ERR_ELEMWRONG:
		if (node->parent && node->parent->type == XML_ELEMENT_NODE)
			return pl_asprintf("<%s> has no element <%s> here", node->parent->name,
					   node->name);
		return NULL;
	default:
		return NULL;
	}
}

static void collect_error(void *arg, xml_error_t *error)
{
	struct error_sink *sink = arg;
	if (sink->doctype_line)
		return; /* we stopped the parser on purpose; the rest is its echo */
	xmlNode *node = error->domain == XML_FROM_RELAXNGV ? error->node : NULL;
	long line = error->line;
	if (line <= 0 && node)
		line = xmlGetLineNo(node);
	char *message = node && node->type == XML_ELEMENT_NODE ? explain(sink, error, node) : NULL;
	/* An explained error is a precise one, whatever libxml2 thought. */
	bool vague = !message && is_vague(error);
	if (!message && node && node->type == XML_ELEMENT_NODE)
		message = pl_asprintf("element %s: %s", node->name,
				      error->message ? error->message : "invalid");
	else if (!message)
		message = pl_strdup(error->message ? error->message : "invalid");
	sink_add(sink, vague, line, message);
	free(message);
}

/* The SAX hook for <!DOCTYPE ...>: stopping here means no internal subset
 * is read at all, so no entity is ever declared, let alone expanded. */
static void refuse_doctype(void *ctx, const xmlChar *name, const xmlChar *external_id,
			   const xmlChar *system_id)
{
	xmlParserCtxtPtr parser = ctx;
	struct error_sink *sink = parser->_private;
	sink->doctype_line = xmlSAX2GetLineNumber(ctx);
	if (sink->doctype_line <= 0)
		sink->doctype_line = 1;
	xmlStopParser(parser);
}

/* ---- validation ------------------------------------------------------------ */

/* Compiles a schema document; the embedded schema failing to compile is
 * a build error, not a user's. */
static xmlRelaxNGPtr compile_schema(xmlDoc *schema_doc)
{
	struct error_sink sink = { .label = "parley.rng" };
	xmlRelaxNGParserCtxtPtr parser = xmlRelaxNGNewDocParserCtxt(schema_doc);
	if (!parser)
		pl_fatal("cannot create a RELAX NG parser");
	xmlRelaxNGSetParserStructuredErrors(parser, collect_error, &sink);
	xmlRelaxNGPtr schema = xmlRelaxNGParse(parser);
	xmlRelaxNGFreeParserCtxt(parser);
	if (!schema)
		pl_fatal("the embedded configuration schema does not compile: %s",
			 sink_message(&sink) ? sink_message(&sink) : "(no message)");
	sink_free(&sink);
	return schema;
}

static int validate_with(xmlRelaxNGPtr schema, xmlDoc *doc, struct error_sink *sink)
{
	xmlRelaxNGValidCtxtPtr context = xmlRelaxNGNewValidCtxt(schema);
	if (!context)
		pl_fatal("cannot create a RELAX NG validation context");
	xmlRelaxNGSetValidStructuredErrors(context, collect_error, sink);
	int rc = xmlRelaxNGValidateDoc(context, doc);
	xmlRelaxNGFreeValidCtxt(context);
	return rc;
}

/* One child of <parley> as the schema's <interleave> allows it. */
struct section_rule {
	char *name;
	bool required;
	bool repeats;
	int count;
	long first_line;
};

/* Reads the rules from <start><element name="parley"><interleave>, whose
 * items are <optional>, <oneOrMore>, <zeroOrMore> or bare <ref>s. */
static size_t read_section_rules(xmlDoc *schema, struct section_rule **out)
{
	xmlNode *start = first_rng_child(xmlDocGetRootElement(schema), "start");
	xmlNode *interleave = first_rng_child(first_rng_child(start, "element"), "interleave");
	size_t count = 0, capacity = 0;
	*out = NULL;
	for (xmlNode *item = interleave ? interleave->children : NULL; item; item = item->next) {
		if (!is_rng(item, NULL))
			continue;
		xmlNode *ref = is_rng(item, "ref") ? item : first_rng_child(item, "ref");
		xmlChar *name = ref ? xmlGetProp(ref, (const xmlChar *)"name") : NULL;
		if (!name)
			continue;
		pl_grow((void **)out, &capacity, count + 1, sizeof(**out));
		const char *wrapper = (const char *)item->name;
		(*out)[count++] = (struct section_rule){
			.name = pl_strdup((const char *)name),
			.required = strcmp(wrapper, "optional") != 0 &&
				    strcmp(wrapper, "zeroOrMore") != 0,
			.repeats = strcmp(wrapper, "oneOrMore") == 0 ||
				   strcmp(wrapper, "zeroOrMore") == 0,
		};
		xmlFree(name);
	}
	return count;
}

/* A copy of the schema whose start is any single child of <parley>, to
 * validate each section alone. */
static xmlRelaxNGPtr compile_section_schema(xmlDoc *schema, const struct section_rule *rules,
					    size_t rule_count)
{
	xmlDoc *copy = xmlCopyDoc(schema, 1);
	xmlNode *start = first_rng_child(xmlDocGetRootElement(copy), "start");
	xmlNode *child;
	while ((child = start->children) != NULL) {
		xmlUnlinkNode(child);
		xmlFreeNode(child);
	}
	xmlNode *choice = xmlNewChild(start, start->ns, (const xmlChar *)"choice", NULL);
	for (size_t i = 0; i < rule_count; i++) {
		xmlNode *ref = xmlNewChild(choice, start->ns, (const xmlChar *)"ref", NULL);
		xmlNewProp(ref, (const xmlChar *)"name", (const xmlChar *)rules[i].name);
	}
	xmlRelaxNGPtr compiled = compile_schema(copy);
	xmlFreeDoc(copy);
	return compiled;
}

/* Explains why the document failed validation, section by section. Adds
 * to `sink` only what it can point at precisely. */
static void diagnose(xmlDoc *doc, xmlDoc *schema, struct error_sink *sink)
{
	xmlNode *root = xmlDocGetRootElement(doc);
	if (!root || strcmp((const char *)root->name, "parley") != 0)
		return;
	struct section_rule *rules;
	size_t rule_count = read_section_rules(schema, &rules);
	xmlRelaxNGPtr sections = compile_section_schema(schema, rules, rule_count);
	struct pl_buf known = { 0 };
	for (size_t i = 0; i < rule_count; i++)
		pl_buf_printf(&known, "%s%s", i ? ", " : "", rules[i].name);
	for (xmlNode *n = root->children; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		long line = xmlGetLineNo(n);
		struct section_rule *rule = NULL;
		for (size_t i = 0; i < rule_count && !rule; i++)
			if (!n->ns && strcmp(rules[i].name, (const char *)n->name) == 0)
				rule = &rules[i];
		if (!rule) {
			char *message = pl_asprintf("<parley> has no element <%s> (known: %s)",
						    n->name, known.len ? known.data : "none");
			sink_add(sink, false, line, message);
			free(message);
			continue;
		}
		if (rule->count++ > 0 && !rule->repeats) {
			char *message = pl_asprintf("<%s> may appear only once (first at line %ld)",
						    rule->name, rule->first_line);
			sink_add(sink, false, line, message);
			free(message);
			continue;
		}
		if (rule->count == 1)
			rule->first_line = line;
		xmlDoc *alone = xmlNewDoc((const xmlChar *)"1.0");
		xmlDocSetRootElement(alone, xmlDocCopyNode(n, alone, 1));
		struct error_sink part = { .label = sink->label, .schema = schema };
		/* libxml2 stops checking an element's attributes at the first bad
		 * one, and what it says after a first error in the content is
		 * mostly its echo: the first message of each section is the one. */
		const char *message = validate_with(sections, alone, &part) != 0
					      ? sink_message(&part) : NULL;
		if (message && ++sink->precise_count <= MAX_REPORTED_ERRORS) {
			if (sink->precise.len)
				pl_buf_puts(&sink->precise, "\n");
			pl_buf_append(&sink->precise, message, strcspn(message, "\n"));
		}
		sink_free(&part);
		xmlFreeDoc(alone);
	}
	for (size_t i = 0; i < rule_count; i++) {
		if (rules[i].required && rules[i].count == 0) {
			char *message = pl_asprintf("<parley> needs at least one <%s>", rules[i].name);
			sink_add(sink, false, xmlGetLineNo(root), message);
			free(message);
		}
		free(rules[i].name);
	}
	free(rules);
	pl_buf_free(&known);
	xmlRelaxNGFree(sections);
}

/* Returns 0 when the document is valid; otherwise fills the sink. */
static int validate(xmlDoc *doc, struct error_sink *sink)
{
	struct error_sink schema_sink = { .label = "parley.rng" };
	xmlSetStructuredErrorFunc(&schema_sink, collect_error);
	xmlDoc *schema_doc = xmlReadMemory(pl_config_schema, (int)strlen(pl_config_schema),
					   "parley.rng", NULL, XML_PARSE_NONET);
	xmlSetStructuredErrorFunc(sink, collect_error);
	if (!schema_doc)
		pl_fatal("the embedded configuration schema is not XML: %s",
			 sink_message(&schema_sink) ? sink_message(&schema_sink) : "(no message)");
	sink_free(&schema_sink);
	xmlRelaxNGPtr schema = compile_schema(schema_doc);
	sink->schema = schema_doc;
	int rc = validate_with(schema, doc, sink);
	xmlRelaxNGFree(schema);
	if (rc != 0) {
		struct error_sink explained = { .label = sink->label };
		diagnose(doc, schema_doc, &explained);
		if (explained.precise.len) {
			sink_free(sink);
			*sink = explained;
		} else {
			sink_free(&explained);
		}
	}
	sink->schema = NULL;
	xmlFreeDoc(schema_doc);
	return rc;
}

/* ---- flattening -------------------------------------------------------------- */

static void free_section(struct pl_config_section *s)
{
	free(s->kind);
	free(s->name);
	for (size_t i = 0; i < s->entry_count; i++) {
		free(s->entries[i].key);
		free(s->entries[i].value);
	}
	free(s->entries);
	for (size_t i = 0; i < s->child_count; i++)
		free_section(&s->children[i]);
	free(s->children);
}

void pl_config_free(struct pl_config *config)
{
	if (!config)
		return;
	for (size_t i = 0; i < config->section_count; i++)
		free_section(&config->sections[i]);
	free(config->sections);
	free(config->path);
	free(config);
}

static void add_entry(struct pl_config_section *s, const char *key, const char *value, long line)
{
	s->entries = pl_realloc(s->entries, (s->entry_count + 1) * sizeof(*s->entries));
	s->entries[s->entry_count++] = (struct pl_config_entry){
		.key = pl_strdup(key),
		.value = pl_strdup(value ? value : ""),
		.line = (int)line,
	};
}

static bool has_element_children(const xmlNode *node)
{
	for (const xmlNode *c = node->children; c; c = c->next)
		if (c->type == XML_ELEMENT_NODE)
			return true;
	return false;
}

/* Element text as a value: surrounding white space is layout
 * (<admin>\n  a@b\n</admin>), never meaning. */
static char *element_text(xmlNode *node)
{
	xmlChar *content = xmlNodeGetContent(node);
	const char *start = content ? (const char *)content : "";
	const char *end = start + strlen(start);
	while (*start == ' ' || *start == '\t' || *start == '\n' || *start == '\r')
		start++;
	while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' ||
			       end[-1] == '\r'))
		end--;
	char *text = pl_strndup(start, (size_t)(end - start));
	xmlFree(content);
	return text;
}

/* Fills a section from an element: attributes (but name=) and text-only
 * child elements become entries; other child elements become children. */
static void flatten(xmlNode *node, struct pl_config_section *s)
{
	memset(s, 0, sizeof(*s));
	s->kind = pl_strdup((const char *)node->name);
	s->line = (int)xmlGetLineNo(node);
	for (xmlAttr *a = node->properties; a; a = a->next) {
		xmlChar *value = xmlNodeGetContent((xmlNode *)a);
		if (strcmp((const char *)a->name, "name") == 0)
			s->name = pl_strdup(value ? (const char *)value : "");
		else
			add_entry(s, (const char *)a->name, (const char *)value, s->line);
		xmlFree(value);
	}
	for (xmlNode *c = node->children; c; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (!c->properties && !has_element_children(c)) {
			char *value = element_text(c);
			add_entry(s, (const char *)c->name, value, xmlGetLineNo(c));
			free(value);
			continue;
		}
		s->children = pl_realloc(s->children, (s->child_count + 1) * sizeof(*s->children));
		flatten(c, &s->children[s->child_count++]);
	}
}

static struct pl_config_section *new_section(struct pl_config *config)
{
	config->sections = pl_realloc(config->sections,
				      (config->section_count + 1) * sizeof(*config->sections));
	return &config->sections[config->section_count++];
}

/* <modules path> is a section of its own, and so is each <module> in it,
 * so modules are found by kind "module" like any other section. */
static void build(struct pl_config *config, xmlNode *root)
{
	for (xmlNode *n = root->children; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		if (strcmp((const char *)n->name, "modules") != 0) {
			flatten(n, new_section(config));
			continue;
		}
		struct pl_config_section *modules = new_section(config);
		memset(modules, 0, sizeof(*modules));
		modules->kind = pl_strdup("modules");
		modules->line = (int)xmlGetLineNo(n);
		for (xmlAttr *a = n->properties; a; a = a->next) {
			xmlChar *value = xmlNodeGetContent((xmlNode *)a);
			add_entry(modules, (const char *)a->name, (const char *)value, modules->line);
			xmlFree(value);
		}
		for (xmlNode *m = n->children; m; m = m->next)
			if (m->type == XML_ELEMENT_NODE)
				flatten(m, new_section(config));
	}
}

/* The schema cannot say that module names are unique, and a second
 * <module name="x"> would otherwise have its options silently unread. */
static int check_modules_unique(xmlNode *root, const char *label, char **error)
{
	for (xmlNode *n = root->children; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE || strcmp((const char *)n->name, "modules") != 0)
			continue;
		for (xmlNode *m = n->children; m; m = m->next) {
			if (m->type != XML_ELEMENT_NODE)
				continue;
			xmlChar *name = xmlGetProp(m, (const xmlChar *)"name");
			for (xmlNode *earlier = n->children; earlier != m; earlier = earlier->next) {
				if (earlier->type != XML_ELEMENT_NODE ||
				    !has_name(earlier, (const char *)name))
					continue;
				int rc = pl_error(error, -EINVAL,
						  "%s:%ld: <module name=\"%s\"> is listed twice (first at line %ld)",
						  label, xmlGetLineNo(m), (const char *)name,
						  xmlGetLineNo(earlier));
				xmlFree(name);
				return rc;
			}
			xmlFree(name);
		}
	}
	return 0;
}

/* ---- loading ------------------------------------------------------------------- */

static int load(const char *xml, size_t len, const char *label, struct pl_config **out,
		char **error)
{
	*out = NULL;
	if (len > MAX_CONFIG_BYTES)
		return pl_error(error, -EFBIG, "%s: larger than %u MiB, not a configuration", label,
				MAX_CONFIG_BYTES >> 20);
	struct error_sink sink = { .label = label };
	xmlParserCtxtPtr parser = xmlNewParserCtxt();
	if (!parser)
		pl_fatal("cannot create an XML parser");
	parser->_private = &sink;
	parser->sax->internalSubset = refuse_doctype;
	/* libxml2 keeps its error handler per thread: put the caller's back. */
	xmlStructuredErrorFunc saved_handler = xmlStructuredError;
	void *saved_context = xmlStructuredErrorContext;
	xmlSetStructuredErrorFunc(&sink, collect_error);
	/* No XML_PARSE_NOENT (entities stay unexpanded), no DTD loading, no
	 * network; BIG_LINES keeps line numbers right past 65535. */
	int options = XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_BIG_LINES;
	xmlDoc *doc = xmlCtxtReadMemory(parser, xml, (int)len, label, NULL, options);
	int rc = 0;
	if (sink.doctype_line) {
		rc = pl_error(error, -EINVAL,
			      "%s:%ld: DOCTYPE not allowed (a configuration has no DTD and no entities)",
			      label, sink.doctype_line);
	} else if (!doc || !xmlDocGetRootElement(doc)) {
		if (sink_message(&sink))
			rc = pl_error(error, -EINVAL, "%s", sink_message(&sink));
		else
			rc = pl_error(error, -EINVAL, "%s: not well-formed XML", label);
	} else if (validate(doc, &sink) != 0) {
		if (sink_message(&sink))
			rc = pl_error(error, -EINVAL, "%s", sink_message(&sink));
		else
			rc = pl_error(error, -EINVAL, "%s: does not match the schema", label);
	} else if ((rc = check_modules_unique(xmlDocGetRootElement(doc), label, error)) != 0) {
		/* rc and *error are set */
	} else {
		struct pl_config *config = pl_calloc(1, sizeof(*config));
		config->path = pl_strdup(label);
		build(config, xmlDocGetRootElement(doc));
		*out = config;
	}
	xmlSetStructuredErrorFunc(saved_context, saved_handler);
	xmlFreeDoc(doc);
	xmlFreeParserCtxt(parser);
	sink_free(&sink);
	return rc;
}

/* Reads the whole file, so that a missing or unreadable file is reported
 * with its errno rather than as an XML error. */
static int read_file(const char *path, struct pl_buf *content, char **error)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return pl_error(error, -errno, "cannot read %s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		close(fd);
		return pl_error(error, -EISDIR, "cannot read %s: %s", path, strerror(EISDIR));
	}
	char chunk[8192];
	for (;;) {
		ssize_t got = read(fd, chunk, sizeof(chunk));
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			int code = errno;
			close(fd);
			return pl_error(error, -code, "cannot read %s: %s", path, strerror(code));
		}
		if (got == 0)
			break;
		if (content->len + (size_t)got > MAX_CONFIG_BYTES) {
			close(fd);
			return pl_error(error, -EFBIG, "%s: larger than %u MiB, not a configuration",
					path, MAX_CONFIG_BYTES >> 20);
		}
		pl_buf_append(content, chunk, (size_t)got);
	}
	close(fd);
	return 0;
}

int pl_config_load_file(const char *path, struct pl_config **out, char **error)
{
	struct pl_buf content = { 0 };
	*out = NULL;
	int rc = read_file(path, &content, error);
	if (rc == 0)
		rc = load(content.data ? content.data : "", content.len, path, out, error);
	pl_buf_free(&content);
	return rc;
}

int pl_config_load_memory(const char *xml, size_t len, const char *label,
			  struct pl_config **out, char **error)
{
	return load(xml, len, label, out, error);
}

const struct pl_config_section *pl_config_next(const struct pl_config *config,
					       const char *kind,
					       const struct pl_config_section *previous)
{
	size_t start = previous ? (size_t)(previous - config->sections) + 1 : 0;
	for (size_t i = start; i < config->section_count; i++)
		if (strcmp(config->sections[i].kind, kind) == 0)
			return &config->sections[i];
	return NULL;
}

const struct pl_config_section *pl_config_find(const struct pl_config *config,
					       const char *kind, const char *name)
{
	for (const struct pl_config_section *s = pl_config_next(config, kind, NULL); s;
	     s = pl_config_next(config, kind, s))
		if (!name || (s->name && strcmp(s->name, name) == 0))
			return s;
	return NULL;
}
