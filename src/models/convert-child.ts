// Entry point of the conversion child process: conversion allocates transient fp32
// copies of each tensor; doing it in its own process returns all of that to the OS before
// the serving process loads the graph, so the server's peak memory is the model's.

import { convertModel, type LoadOptions } from './registry.ts';

const [dir, optsJson] = process.argv.slice(2);
const opts = JSON.parse(optsJson) as LoadOptions;
try {
  const r = await convertModel(dir, { ...opts, isolate: false });
  process.stdout.write(JSON.stringify({ ok: true, target: r.target, peakRssBytes: process.resourceUsage().maxRSS * 1024 }));
} catch (e) {
  const err = e as { code?: string; message?: string; name?: string };
  process.stdout.write(JSON.stringify({ ok: false, code: err.code, message: err.message, name: err.name }));
}
