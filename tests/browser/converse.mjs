// The real-browser check of issue 10: Converse.js, unchanged, in headless
// Chromium driven by playwright-core. Alice logs in over WebSocket, Bob
// over BOSH, each sees the other in the roster, and they exchange a
// message each way. Prints one "check <ok|fail> <what>" line per step for
// the TAP test that runs it (test_converse.c), "skip <why>" if Chromium
// cannot start, and leaves a screenshot of Alice's window.
//   node converse.mjs HTTP_PORT NODE_MODULES_DIR SCREENSHOT_PATH
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const [httpPort, modules, screenshot] = process.argv.slice(2);
const { chromium } = await import(path.join(modules, 'playwright-core', 'index.mjs'));
const dist = path.join(modules, 'converse.js', 'dist');

function page(user, transport) {
	const service = transport === 'websocket'
		? `websocket_url: 'ws://127.0.0.1:${httpPort}/xmpp-websocket'`
		: `bosh_service_url: 'http://127.0.0.1:${httpPort}/http-bind'`;
	return `<!doctype html><html><head><meta charset="utf-8"><title>${user}</title>
<link rel="stylesheet" href="/dist/converse.min.css">
<script type="module" src="/dist/converse.min.js"></script></head><body>
<script type="module">
converse.plugins.add('parley-test', { initialize() { window.converseApi = this._converse.api; } });
converse.initialize({ ${service}, jid: '${user}@localhost', password: '${user}-secret',
  auto_login: true, view_mode: 'fullscreen', discover_connection_methods: false,
  auto_reconnect: false, whitelisted_plugins: ['parley-test'], loglevel: 'warn',
  show_controlbox_by_default: true, play_sounds: false, show_desktop_notifications: false,
  omemo_default: false });
</script></body></html>`;
}

const types = { '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json',
	'.wasm': 'application/wasm', '.svg': 'image/svg+xml', '.png': 'image/png',
	'.woff2': 'font/woff2', '.woff': 'font/woff', '.ttf': 'font/ttf', '.mp3': 'audio/mpeg' };
const server = http.createServer((req, res) => {
	const url = new URL(req.url, 'http://x');
	if (url.pathname === '/alice.html' || url.pathname === '/bob.html') {
		const user = url.pathname.slice(1, -5);
		res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
		res.end(page(user, user === 'alice' ? 'websocket' : 'bosh'));
		return;
	}
	const file = path.join(dist, path.normalize(url.pathname.replace(/^\/dist\//, '/')));
	if (!url.pathname.startsWith('/dist/') || !file.startsWith(dist) || !fs.existsSync(file)) {
		res.writeHead(404);
		res.end();
		return;
	}
	res.writeHead(200, { 'Content-Type': types[path.extname(file)] || 'application/octet-stream' });
	fs.createReadStream(file).pipe(res);
});
await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${server.address().port}`;

function check(ok, what) {
	console.log(`check ${ok ? 'ok' : 'fail'} ${what}`);
	return ok;
}

let browser;
try {
	browser = await chromium.launch({
		executablePath: process.env.PARLEY_CHROMIUM || '/usr/bin/chromium',
		args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
		timeout: 30000,
	});
} catch (e) {
	console.log(`skip Chromium cannot start: ${String(e.message).split('\n')[0]}`);
	server.close();
	process.exit(0);
}

const timeout = 30000;
async function open(user) {
	const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
	const p = await context.newPage();
	p.on('pageerror', e => console.log(`# ${user} page error: ${e.message}`));
	await p.goto(`${base}/${user}.html`);
	return p;
}

let failed = false;
async function step(what, fn) {
	if (failed)
		return check(false, `${what} (not tried after a failure)`);
	try {
		await fn();
		return check(true, what);
	} catch (e) {
		console.log(`# ${String(e.message).split('\n')[0]}`);
		failed = true;
		return check(false, what);
	}
}

try {
	const alice = await open('alice');
	const bob = await open('bob');
	await step('Alice (WebSocket) is logged in and sees Bob in her roster', () =>
		alice.locator('converse-roster').getByText('Bob').first().waitFor({ timeout }));
	await step('Bob (BOSH) is logged in and sees Alice in his roster', () =>
		bob.locator('converse-roster').getByText('Alice').first().waitFor({ timeout }));
	await step('Alice sends Bob a message from the chat window', async () => {
		await alice.locator('converse-roster').getByText('Bob').first().click();
		const box = alice.locator('textarea.chat-textarea').first();
		await box.waitFor({ timeout });
		await box.fill('Hello Bob, over WebSocket');
		await box.press('Enter');
	});
	await step('Bob receives it over BOSH', async () => {
		await bob.locator('converse-roster').getByText('Alice').first().click();
		await bob.getByText('Hello Bob, over WebSocket').first().waitFor({ timeout });
	});
	await step('Bob answers', async () => {
		const box = bob.locator('textarea.chat-textarea').first();
		await box.waitFor({ timeout });
		await box.fill('Hello Alice, over BOSH');
		await box.press('Enter');
	});
	await step('Alice receives the answer over WebSocket', () =>
		alice.getByText('Hello Alice, over BOSH').first().waitFor({ timeout }));
	await alice.screenshot({ path: screenshot });
	check(fs.existsSync(screenshot), `a screenshot of Alice's window is in ${screenshot}`);
} finally {
	await browser.close();
	server.close();
}
