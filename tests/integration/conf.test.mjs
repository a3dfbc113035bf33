// nginx -t: `load_module` plus `spendpol on;` is a complete configuration,
// and the shipped conf/ files are valid with the built module.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO, BUILD } from './lib/stack.mjs';
import { nginxTest } from './lib/nginx-t.mjs';

const SO = path.join(BUILD, 'nginx/objs/ngx_http_spendpol_module.so');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spendpol-conf-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** nginx -t on a config text in this file's dir; returns { status, output } */
const nginxT = (text) => nginxTest(dir, text);

// only what nginx itself needs around the two lines, kept out of system paths
const around = (inner) => `
load_module ${SO};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events {}
http {
  access_log off;
  client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/px; fastcgi_temp_path ${dir}/fc;
  uwsgi_temp_path ${dir}/uw; scgi_temp_path ${dir}/sc;
  ${inner}
}
`;

test('load_module + `spendpol on;` alone passes nginx -t (every other directive has a default)', () => {
  const r = nginxT(around('server { listen 127.0.0.1:1; location /v1/ { spendpol on; } }'));
  assert.equal(r.status, 0, r.output);
  assert.match(r.output, /test is successful/);
});

test('conf/spendpol.conf included in a server block passes nginx -t', () => {
  const r = nginxT(around(`server { listen 127.0.0.1:1; include ${path.join(REPO, 'conf/spendpol.conf')}; }`));
  assert.equal(r.status, 0, r.output);
});

test('conf/nginx.example.conf passes nginx -t with this build', () => {
  // its `user spendpol-nginx spendpol;` needs the users (made when missing)
  execFileSync('bash', ['-c', `. '${REPO}/scripts/lib/stack.sh'; sp_ensure_users`]);
  const text = fs.readFileSync(path.join(REPO, 'conf/nginx.example.conf'), 'utf8')
    .replace(/^load_module .*;$/m, `load_module ${SO};`)
    .replaceAll('/var/log/nginx/', `${dir}/`)
    .replace(/^pid .*;$/m, `pid ${dir}/nginx.pid;`)
    .replace('/var/lib/spendpol/journal.log', `${dir}/journal.log`)
    .replace(/^http \{$/m, `http {\n    client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/px; fastcgi_temp_path ${dir}/fc; uwsgi_temp_path ${dir}/uw; scgi_temp_path ${dir}/sc;`);
  const r = nginxT(text);
  assert.equal(r.status, 0, r.output);
});

test('a bad spendpol directive is refused with a clear [emerg]', () => {
  const r = nginxT(around('server { listen 127.0.0.1:1; location /v1/ { spendpol maybe; } }'));
  assert.notEqual(r.status, 0);
  assert.match(r.output, /\[emerg\].*spendpol/);
});

test('spendpol_upstream_keepalive* are accepted in http and location context', () => {
  let r = nginxT(around('spendpol_upstream_keepalive 0; spendpol_upstream_keepalive_timeout 5s; '
    + 'server { listen 127.0.0.1:1; location /v1/ { spendpol on; spendpol_upstream_keepalive_requests 10; } }'));
  assert.equal(r.status, 0, r.output);
  r = nginxT(around('server { listen 127.0.0.1:1; location /v1/ { spendpol on; spendpol_upstream_keepalive_requests 0; } }'));
  assert.notEqual(r.status, 0);
  assert.match(r.output, /\[emerg\].*spendpol_upstream_keepalive_requests must be at least 1/);
});

test('an upstream block named spendpol.upstream is refused: the module owns that name', () => {
  const r = nginxT(around('upstream spendpol.upstream { server 127.0.0.1:1; } '
    + 'server { listen 127.0.0.1:1; location /v1/ { spendpol on; } }'));
  assert.notEqual(r.status, 0);
  assert.match(r.output, /\[emerg\].*duplicate upstream "spendpol\.upstream"/);
});

test('spendpol_lease_wait takes a time in http, server and location context; anything else is refused', () => {
  let r = nginxT(around('spendpol_lease_wait 20ms; server { listen 127.0.0.1:1; spendpol_lease_wait 1s; '
    + 'location /v1/ { spendpol on; spendpol_lease_wait 0; } }'));
  assert.equal(r.status, 0, r.output);
  r = nginxT(around('server { listen 127.0.0.1:1; location /v1/ { spendpol on; spendpol_lease_wait soon; } }'));
  assert.notEqual(r.status, 0);
  assert.match(r.output, /\[emerg\] "spendpol_lease_wait" directive invalid value/);
  r = nginxT(around('server { listen 127.0.0.1:1; location /v1/ { spendpol on; spendpol_lease_wait 1s 2s; } }'));
  assert.notEqual(r.status, 0);
  assert.match(r.output, /\[emerg\] invalid number of arguments in "spendpol_lease_wait"/);
});
