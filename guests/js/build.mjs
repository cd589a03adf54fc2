// Builds the JavaScript echo guest into a component:
//   node guests/js/build.mjs OUT.wasm
// or, with --per-client, the one instance per client (stdin to stdout):
//   node guests/js/build.mjs --per-client OUT.wasm
// Needs the pinned @bytecodealliance/componentize-js (`npm ci` here).
// package.json also names @bytecodealliance/preview2-shim: componentize-js
// imports it without declaring it, so a clean install would miss it.
//
// componentize-js 0.23 emits no JavaScript class for an imported resource
// that has no methods, such as wasi:sockets/network's `network`, yet its
// generated glue refers to that class when instance-network returns one:
// every JS guest using wasi:sockets fails with "import_network_0_2_12$Network
// is not defined" (ComponentizeJS issue #221, open). Until it is fixed, this
// script patches the pinned package once so that such classes are declared.
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const perClient = process.argv[2] === '--per-client';
const args = process.argv.slice(perClient ? 3 : 2);
const [guest, world, name] = perClient
  ? ['stdio.js', 'echo-stdio', 'echo-stdio-js.wasm']
  : ['echo.js', 'echo-server', 'echo-js.wasm'];
const out = resolve(args[0] ?? join(here, name));

const MARK = '/* echo: declare method-less resource classes */';
const source = fileURLToPath(import.meta.resolve('@bytecodealliance/componentize-js'));
const original = await readFile(source, 'utf8');
if (!original.includes(MARK)) {
  const write = 'await writeFile(initializerPath, jsBindings);';
  if (!original.includes(write)) throw new Error(`cannot patch ${source}: its code changed`);
  const declare = `${MARK} jsBindings += [...new Set(jsBindings.match(/(?<=new\\.target === )import_\\w+\\$\\w+/g) ?? [])]
    .filter((name) => !jsBindings.includes(\`class \${name} \`)).map((name) => \`\\nclass \${name} {}\`).join('');`;
  await writeFile(source, original.replace(write, `${declare}\n  ${write}`));
}

const { componentize } = await import('@bytecodealliance/componentize-js');
const { component } = await componentize({
  sourcePath: join(here, guest),
  witPath: join(here, '../../wit'),
  worldName: world,
  // Only what the world needs: no HTTP, no fetch event.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`wrote ${out}`);
