/* Loading parley.xml: libxml2 parses it (no network, no entity
 * substitution, and any DOCTYPE refused, so a config cannot pull in files
 * or expand entities), the embedded RELAX NG schema validates it, and the
 * tree is flattened into sections of key/value entries that keep their
 * line numbers for the typed option parsers' messages. libxml2's own error
 * output is captured into our message, never printed. */
#include "config.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/relaxng.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

extern const char pl_config_schema[];

/* Collects the first few libxml2 errors as "FILE:LINE: message" lines. */
struct error_sink {
	const char *label;
	struct pl_buf text;
	int count;
};

static void collect_error(void *arg, const xmlError *error)
{
	struct error_sink *sink = arg;
	if (++sink->count > 5)
		return;
	char *message = pl_strdup(error->message ? error->message : "invalid");
	size_t len = strlen(message);
	while (len > 0 && (message[len - 1] == '\n' || message[len - 1] == ' '))
		message[--len] = '\0';
	if (sink->text.len)
		pl_buf_puts(&sink->text, "\n");
	pl_buf_printf(&sink->text, "%s:%d: %s", sink->label, error->line, message);
	free(message);
}

static void collect_error_legacy(void *arg, xmlErrorPtr error)
{
	collect_error(arg, error);
}

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

static void add_entry(struct pl_config_section *s, const char *key, const char *value, int line)
{
	s->entries = pl_realloc(s->entries, (s->entry_count + 1) * sizeof(*s->entries));
	s->entries[s->entry_count++] = (struct pl_config_entry){ pl_strdup(key), pl_strdup(value),
								  line };
}

static bool has_element_children(xmlNode *node)
{
	for (xmlNode *c = node->children; c; c = c->next)
		if (c->type == XML_ELEMENT_NODE)
			return true;
	return false;
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
			s->name = pl_strdup((const char *)value);
		else
			add_entry(s, (const char *)a->name, (const char *)value, s->line);
		xmlFree(value);
	}
	for (xmlNode *c = node->children; c; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (!c->properties && !has_element_children(c)) {
			xmlChar *value = xmlNodeGetContent(c);
			add_entry(s, (const char *)c->name, (const char *)value, (int)xmlGetLineNo(c));
			xmlFree(value);
			continue;
		}
		s->children = pl_realloc(s->children, (s->child_count + 1) * sizeof(*s->children));
		flatten(c, &s->children[s->child_count++]);
	}
}

static void append_section(struct pl_config *config, xmlNode *node)
{
	config->sections = pl_realloc(config->sections,
				      (config->section_count + 1) * sizeof(*config->sections));
	flatten(node, &config->sections[config->section_count++]);
}

static void build(struct pl_config *config, xmlNode *root)
{
	for (xmlNode *n = root->children; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		if (strcmp((const char *)n->name, "modules") != 0) {
			append_section(config, n);
			continue;
		}
		/* <modules path> is a section; each <module> is one of its own. */
		config->sections = pl_realloc(config->sections, (config->section_count + 1) *
									sizeof(*config->sections));
		struct pl_config_section *modules = &config->sections[config->section_count++];
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
				append_section(config, m);
	}
}

static int validate(xmlDoc *doc, struct error_sink *sink)
{
	xmlRelaxNGParserCtxtPtr parser =
		xmlRelaxNGNewMemParserCtxt(pl_config_schema, (int)strlen(pl_config_schema));
	xmlRelaxNGPtr schema = parser ? xmlRelaxNGParse(parser) : NULL;
	xmlRelaxNGFreeParserCtxt(parser);
	if (!schema)
		pl_fatal("the embedded configuration schema does not parse");
	xmlRelaxNGValidCtxtPtr context = xmlRelaxNGNewValidCtxt(schema);
	xmlRelaxNGSetValidStructuredErrors(context, collect_error_legacy, sink);
	int rc = xmlRelaxNGValidateDoc(context, doc);
	xmlRelaxNGFreeValidCtxt(context);
	xmlRelaxNGFree(schema);
	return rc;
}

static int load(const char *xml, size_t len, const char *path, const char *label,
		struct pl_config **out, char **error)
{
	struct error_sink sink = { .label = label };
	xmlParserCtxtPtr parser = xmlNewParserCtxt();
	if (!parser)
		pl_fatal("cannot create an XML parser");
	xmlSetStructuredErrorFunc(&sink, collect_error_legacy);
	xmlSetGenericErrorFunc(NULL, NULL);
	int options = XML_PARSE_NONET | XML_PARSE_NOBLANKS;
	xmlDoc *doc = path ? xmlCtxtReadFile(parser, path, NULL, options)
			   : xmlCtxtReadMemory(parser, xml, (int)len, label, NULL, options);
	int rc = 0;
	if (!doc) {
		if (sink.text.len == 0)
			pl_buf_printf(&sink.text, "%s: not well-formed XML", label);
		rc = pl_error(error, -EINVAL, "%s", sink.text.data);
	} else if (doc->intSubset || doc->extSubset) {
		xmlNode *root = xmlDocGetRootElement(doc);
		rc = pl_error(error, -EINVAL,
			      "%s:%ld: DOCTYPE not allowed before <parley> (no DTD or entities in a configuration)",
			      label, root ? xmlGetLineNo(root) : 1L);
	} else if (validate(doc, &sink) != 0) {
		rc = pl_error(error, -EINVAL, "%s", sink.text.len ? sink.text.data
								   : "does not match the schema");
	} else {
		struct pl_config *config = pl_calloc(1, sizeof(*config));
		config->path = pl_strdup(label);
		build(config, xmlDocGetRootElement(doc));
		*out = config;
	}
	xmlSetStructuredErrorFunc(NULL, NULL);
	xmlFreeDoc(doc);
	xmlFreeParserCtxt(parser);
	pl_buf_free(&sink.text);
	return rc;
}

int pl_config_load_file(const char *path, struct pl_config **out, char **error)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return pl_error(error, -errno, "cannot read %s: %s", path, strerror(errno));
	fclose(f);
	return load(NULL, 0, path, path, out, error);
}

int pl_config_load_memory(const char *xml, size_t len, const char *label,
			  struct pl_config **out, char **error)
{
	return load(xml, len, NULL, label, out, error);
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
