// The seed README's TypeScript Quick Start, run as a file from a project that
// installed the packed tarball (as a user would).
//
// `snippets/seed-quickstart.ts` is the seed's snippet byte for byte. It is
// type-checked with tsc (strict) and then run with node as an ES module (the
// snippet is also valid JavaScript). When port 8080 is free the test starts a
// server there and runs the text unchanged; when 8080 is taken it runs a copy
// in which only the URL 'http://localhost:8080' is replaced by the test
// server's URL.

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { CapsuleServer, SDK_ROOT, portIsFree } from './helpers/server.mjs';

const SNIPPET = join(SDK_ROOT, 'test', 'snippets', 'seed-quickstart.ts');
const SEED_URL = 'http://localhost:8080';

let project;
let tarball;

function npm(args, cwd) {
  return execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

before(() => {
  project = mkdtempSync(join(tmpdir(), 'capsule-sdk-ts-seed-'));
  tarball = process.env.CAPSULE_SDK_TARBALL;
  if (!tarball) {
    npm(['pack', '--silent', '--pack-destination', project], SDK_ROOT);
    tarball = join(project, readdirSync(project).find((f) => f.endsWith('.tgz')));
  }
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'seed-user', private: true, type: 'module' }));
  npm(['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], project);
});

after(() => {
  if (project) rmSync(project, { recursive: true, force: true });
});

describe('seed quick start', () => {
  it('is the seed text verbatim', (t) => {
    const readme = process.env.CAPSULE_SEED_README || '/work/shared/seeds/capsule.md';
    if (!existsSync(readme)) {
      t.skip('the seed README is not on this machine (set CAPSULE_SEED_README)');
      return;
    }
    const m = /### Using the TypeScript SDK\n\n```typescript\n([\s\S]*?)```/.exec(readFileSync(readme, 'utf8'));
    assert.ok(m, 'the seed README has no TypeScript snippet');
    assert.equal(readFileSync(SNIPPET, 'utf8'), m[1]);
  });

  it('the packed tarball holds the build and its types only', () => {
    const files = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).trim().split('\n').sort();
    for (const f of ['package/package.json', 'package/README.md', 'package/dist/index.js', 'package/dist/index.d.ts', 'package/dist/terminal.d.ts']) {
      assert.ok(files.includes(f), `${f} missing from ${files.join(', ')}`);
    }
    assert.ok(!files.some((f) => f.startsWith('package/src/') || f.startsWith('package/test/')), files.join(', '));
  });

  it('type-checks against the installed package', () => {
    writeFileSync(join(project, 'seed.ts'), readFileSync(SNIPPET, 'utf8'));
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          lib: ['ES2022', 'DOM'],
          types: [],
          skipLibCheck: false,
        },
        files: ['seed.ts'],
      }),
    );
    const tsc = join(SDK_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', project], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });

  it('runs and prints what its comments say', async () => {
    const text = readFileSync(SNIPPET, 'utf8');
    assert.equal(text.split(SEED_URL).length - 1, 1);
    let own;
    if (await portIsFree(8080)) {
      try {
        own = await new CapsuleServer({ port: 8080 }).start();
      } catch {
        own = undefined; // lost a race for the port
      }
    }
    const fallback = own ? undefined : await new CapsuleServer().start();
    const target = own ?? fallback;
    try {
      const script = join(project, 'seed.mjs');
      writeFileSync(script, own ? text : text.replace(SEED_URL, target.url));
      const existing = await target.sandboxIds();
      const started = Date.now();
      const r = spawnSync(process.execPath, [script], { cwd: project, encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ''}\n${r.stdout}\n${r.stderr}`);
      // console.log(result.stdout) of "Hello, Capsule!\n" prints it and a blank line;
      // whatever the terminal printed before delete() follows.
      assert.ok(r.stdout.startsWith('Hello, Capsule!\n\n'), JSON.stringify(r.stdout));
      assert.equal(r.stderr, '');
      // It ended by itself, promptly: delete() closed the terminal.
      assert.ok(Date.now() - started < 30_000);
      assert.deepEqual(await target.sandboxIds(), existing);
      console.log(`seed snippet ran ${own ? 'verbatim on port 8080' : `with the URL replaced by ${target.url}`}`);
    } finally {
      await target.stop();
    }
  });
});
