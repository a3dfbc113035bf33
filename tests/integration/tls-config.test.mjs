// Upstream TLS cannot silently turn off: the CA bundle that verifies
// providers' certificates (spendpol_ssl_trusted_certificate, default the
// system bundle) must be readable, or nginx -t fails naming the file and
// the directive; there is no unverified fallback.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BUILD } from './lib/stack.mjs';
import { nginxTest } from './lib/nginx-t.mjs';

const SO = path.join(BUILD, 'nginx/objs/ngx_http_spendpol_module.so');
const SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spendpol-tls-conf-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** nginx -t on a config text in this file's dir; returns { status, output } */
const nginxT = (text) => nginxTest(dir, text);

// `http` goes in http{} before the server whose location says `spendpol on`
const around = (http, loc = '') => `
load_module ${SO};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events {}
http {
  access_log off;
  client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/px; fastcgi_temp_path ${dir}/fc;
  uwsgi_temp_path ${dir}/uw; scgi_temp_path ${dir}/sc;
  spendpol_journal ${dir}/journal.log;
  ${http}
  server { listen 127.0.0.1:1; location /v1/ { spendpol on; ${loc} } }
}
`;

function refusedFor(r, file, problem) {
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /test failed/);
  const line = r.output.split('\n').find((l) => l.includes('[emerg]')) || '';
  assert.ok(line.includes(`CA bundle "${file}"`), `names the file: ${line}`);
  assert.ok(line.includes('"spendpol_ssl_trusted_certificate"'), `names the directive: ${line}`);
  assert.match(line, problem);
}

test('the default configuration verifies against the system bundle and passes nginx -t', () => {
  assert.ok(fs.existsSync(SYSTEM_BUNDLE), `${SYSTEM_BUNDLE} is on this machine (ca-certificates)`);
  const r = nginxT(around(''));
  assert.equal(r.status, 0, r.output);
  assert.match(r.output, /test is successful/);
  assert.doesNotMatch(r.output, /not verified|\[warn\].*CA bundle/);
});

test('spendpol_ssl_trusted_certificate naming a missing file fails nginx -t, naming the file and the directive', () => {
  const missing = path.join(dir, 'no-such-bundle.pem');
  refusedFor(nginxT(around(`spendpol_ssl_trusted_certificate ${missing};`)), missing,
    /set by "spendpol_ssl_trusted_certificate"\) cannot be opened.*No such file or directory/);
});

test('a directory or an empty file as the bundle fails nginx -t', () => {
  refusedFor(nginxT(around(`spendpol_ssl_trusted_certificate ${dir};`)), dir, /is not a file/);
  const empty = path.join(dir, 'empty.pem');
  fs.writeFileSync(empty, '');
  refusedFor(nginxT(around(`spendpol_ssl_trusted_certificate ${empty};`)), empty, /is empty/);
});

test('a bundle the user nginx runs as cannot read fails nginx -t', () => {
  // as root every file is readable: run nginx -t as nobody, in a directory of its own
  const own = path.join(dir, 'as-nobody');
  fs.chmodSync(dir, 0o755);
  fs.mkdirSync(own);
  fs.chmodSync(own, 0o777);
  const locked = path.join(own, 'locked.pem');
  fs.copyFileSync(SYSTEM_BUNDLE, locked);
  fs.chmodSync(locked, 0o000);
  const asUser = process.getuid() === 0 ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] : [];
  const run = () => nginxTest(own, `
load_module ${SO};
pid ${own}/nginx.pid;
error_log ${own}/error.log;
events {}
http {
  access_log off;
  client_body_temp_path ${own}/cb; proxy_temp_path ${own}/px; fastcgi_temp_path ${own}/fc;
  uwsgi_temp_path ${own}/uw; scgi_temp_path ${own}/sc;
  spendpol_journal ${own}/journal.log;
  spendpol_ssl_trusted_certificate ${locked};
  server { listen unix:${own}/nginx.sock; location /v1/ { spendpol on; } }
}
`, { file: 't.conf', prefix: asUser });
  refusedFor(run(), locked, /cannot be opened.*Permission denied/);
  // the same file made readable passes: the refusal was about reading it
  fs.chmodSync(locked, 0o644);
  const r = run();
  assert.equal(r.status, 0, r.output);
});

test('a bundle that is not PEM is refused by nginx, naming the file', () => {
  const junk = path.join(dir, 'junk.pem');
  fs.writeFileSync(junk, 'not a certificate\n');
  const r = nginxT(around(`spendpol_ssl_trusted_certificate ${junk};`));
  assert.notEqual(r.status, 0, r.output);
  assert.ok(r.output.includes(junk), r.output);
});

test('a readable bundle of the operator\'s own passes nginx -t; a relative path is taken from the prefix', () => {
  fs.copyFileSync(SYSTEM_BUNDLE, path.join(dir, 'own.pem'));
  let r = nginxT(around(`spendpol_ssl_trusted_certificate ${path.join(dir, 'own.pem')};`));
  assert.equal(r.status, 0, r.output);
  r = nginxT(around('spendpol_ssl_trusted_certificate own.pem;'));
  assert.equal(r.status, 0, r.output);
  r = nginxT(around('spendpol_ssl_trusted_certificate missing.pem;'));
  refusedFor(r, path.join(dir, 'missing.pem'), /cannot be opened/);
});

test('spendpol_ssl_trusted_certificate after a `spendpol on` location, twice, or in a location is refused', () => {
  let r = nginxT(around('').replace(/\}\n$/, `spendpol_ssl_trusted_certificate ${SYSTEM_BUNDLE};\n}\n`));
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /\[emerg\] "spendpol_ssl_trusted_certificate" directive must come before the first "spendpol on"/);
  r = nginxT(around(`spendpol_ssl_trusted_certificate ${SYSTEM_BUNDLE}; spendpol_ssl_trusted_certificate ${SYSTEM_BUNDLE};`));
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /\[emerg\] "spendpol_ssl_trusted_certificate" directive is duplicate/);
  r = nginxT(around('', `spendpol_ssl_trusted_certificate ${SYSTEM_BUNDLE};`));
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /\[emerg\] "spendpol_ssl_trusted_certificate" directive is not allowed here/);
});
