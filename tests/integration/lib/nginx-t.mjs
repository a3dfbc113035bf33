// `nginx -t` on a configuration text, with the module of this build (a
// sanitized module gets its runtimes preloaded, as scripts/lib/stack.sh
// does for a running nginx). Used by the tests of configuration errors.

import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { IS_SAN } from './stack.mjs';

function gccLib(name) {
  const f = execFileSync('gcc', [`-print-file-name=${name}`], { encoding: 'utf8' }).trim();
  return fs.realpathSync(f);
}

/**
 * Writes text to a new file in dir and runs `nginx -t` on it with dir as
 * the prefix and dir/error.log as the error log; prefix: a command that
 * runs nginx as another user (e.g. setpriv). Returns { status, output }.
 */
export function nginxTest(dir, text, { file, prefix = [] } = {}) {
  const conf = path.join(dir, file ?? `t-${Math.random().toString(16).slice(2)}.conf`);
  fs.writeFileSync(conf, text, { mode: 0o644 });
  const env = { ...process.env };
  if (IS_SAN) {
    env.LD_PRELOAD = `${gccLib('libasan.so')} ${gccLib('libubsan.so')}`;
    env.ASAN_OPTIONS = 'detect_leaks=0';
  }
  const args = [...prefix, '/usr/sbin/nginx', '-t', '-p', `${dir}/`, '-c', conf, '-e', path.join(dir, 'error.log')];
  const r = spawnSync(args[0], args.slice(1), { env, encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}
