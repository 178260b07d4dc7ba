// Vercel's own build of a project folder, as its build step does it with zero configuration:
// `@vercel/fs-detectors` picks the builder and preset from the files and vercel.json, `@vercel/python` builds,
// and the Lambda it returns is written out as files, with a summary.
//   node build.js <project folder> <output folder> <summary.json>   (run from the folder holding node_modules)
// The summary: the builder chosen, the versions, the Lambda's handler, runtime and settings, the routes.
// (The builder prints its own progress on stdout.)
'use strict';

const fs = require('fs');
const path = require('path');
const { glob } = require('@vercel/build-utils');
const { detectBuilders } = require('@vercel/fs-detectors');
const python = require('@vercel/python');

function version(name) {
  return require(`${name}/package.json`).version;
}

async function writeFile(file, destination) {
  fs.mkdirSync(path.dirname(destination), { recursive: true });
  if (file.type === 'Symlink' || file.type === 'symlink') {
    throw new Error(`unexpected symlink in the bundle: ${destination}`);
  }
  if (file.data !== undefined) {
    fs.writeFileSync(destination, file.data);
  } else if (file.fsPath) {
    fs.copyFileSync(file.fsPath, destination);
  } else {
    await new Promise((resolve, reject) => {
      const out = fs.createWriteStream(destination);
      file.toStream().on('error', reject).pipe(out).on('finish', resolve).on('error', reject);
    });
  }
  if (file.mode) fs.chmodSync(destination, file.mode & 0o777);
}

async function main() {
  const [workPath, outDir, summaryPath] = process.argv.slice(2).map((p) => path.resolve(p));
  const vercelJson = JSON.parse(fs.readFileSync(path.join(workPath, 'vercel.json'), 'utf8'));
  const files = await glob('**', { cwd: workPath, dot: true });
  const detected = await detectBuilders(Object.keys(files), null, {
    functions: vercelJson.functions,
    projectSettings: { framework: 'flask' },
  });
  if (detected.errors && detected.errors.length) throw new Error(JSON.stringify(detected.errors));
  const builders = detected.builders || [];
  const builder = builders.find((b) => b.use.startsWith('@vercel/python'));
  if (!builder) throw new Error(`no Python builder detected: ${JSON.stringify(builders)}`);
  const result = await python.build({
    workPath,
    repoRootPath: workPath,
    files,
    entrypoint: builder.src,
    config: builder.config || {},
    // The files are already in workPath (Vercel's build container has them there too).
    meta: { skipDownload: true },
  });
  // A framework preset returns { resultVersion, result: { output: { <name>: Lambda }, routes } }.
  const built = result.result || result;
  const outputs = built.output.type === 'Lambda' ? { index: built.output } : built.output;
  const lambdas = Object.entries(outputs).filter(([, output]) => output.type === 'Lambda');
  if (lambdas.length !== 1) throw new Error(`expected one Lambda, got: ${Object.keys(outputs)}`);
  const [[lambdaName, lambda]] = lambdas;
  const names = Object.keys(lambda.files).sort();
  for (const name of names) await writeFile(lambda.files[name], path.join(outDir, name));
  fs.writeFileSync(summaryPath, JSON.stringify({
    builders: builders.map((b) => ({ use: b.use, src: b.src, config: b.config })),
    versions: {
      '@vercel/python': version('@vercel/python'),
      '@vercel/build-utils': version('@vercel/build-utils'),
      '@vercel/fs-detectors': version('@vercel/fs-detectors'),
      node: process.version,
    },
    lambda: lambdaName,
    routes: built.routes,
    handler: lambda.handler,
    runtime: lambda.runtime,
    environment: lambda.environment,
    maxDuration: lambda.maxDuration,
    supportsResponseStreaming: lambda.supportsResponseStreaming,
    files: names,
  }, null, 2) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
