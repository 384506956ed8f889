/**
 * The README's library examples: every ```ts block whose first line is
 * `// file: NAME.ts`, by file name. Used by the package test, which compiles
 * and runs them against the installed tarball so they cannot rot.
 *
 * @module
 */
const BLOCK = /```ts\n\/\/ file: ([\w.-]+\.ts)\n([\s\S]*?)```/g;

/** The examples of `readme`, file name → source (the `// file:` line dropped). */
export function readmeExamples(readme: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of readme.matchAll(BLOCK)) {
    const name = m[1]!;
    if (name in out) throw new Error(`README: two examples named ${name}`);
    out[name] = m[2]!;
  }
  return out;
}
