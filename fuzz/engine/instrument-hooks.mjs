// Module loader hooks that add edge-coverage counters to the project's
// TypeScript sources (src/**/*.ts, tests excluded) as they are imported, for
// the fuzz engine (./engine.ts). Registered by ./register.mjs; runs on
// Node's loader thread.
//
// Each source is compiled with the TypeScript compiler (already a dev
// dependency) and a transformer that puts `__virtioFuzzCov[ID]++` at every
// point where control flow branches: function entry, both arms of `if`
// (an empty `else` is added), loop bodies, `case`/`default` clauses, `catch`,
// both arms of `?:` and the right operand of `&&`, `||` and `??`. IDs are
// global across modules (one counter per point, in a Uint8Array the engine
// scans after every run, AFL-style). A module announces its highest ID with
// `__virtioFuzzNote(n)` before its body runs.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import ts from "typescript";

/** Counters available (must match register.mjs); IDs wrap past it. */
const COUNTERS = 1 << 18;
let nextId = 1;

/** @type {{ include: string[] }} */
let config = { include: [] };

/** @param {{ include: string[] }} data */
export function initialize(data) {
  config = data;
}

/** @param {string} path */
function shouldInstrument(path) {
  return (
    path.endsWith(".ts") &&
    !path.endsWith(".test.ts") &&
    !path.endsWith(".d.ts") &&
    config.include.some((dir) => path.startsWith(dir))
  );
}

/** @type {import("typescript").TransformerFactory<import("typescript").SourceFile>} */
const coverage = (ctx) => {
  const f = ctx.factory;
  const bump = () => {
    const id = nextId++ % COUNTERS;
    return f.createPostfixIncrement(
      f.createElementAccessExpression(
        f.createIdentifier("__virtioFuzzCov"),
        f.createNumericLiteral(id),
      ),
    );
  };
  const bumpStmt = () => f.createExpressionStatement(bump());
  /** @param {import("typescript").Expression} e */
  const counted = (e) => f.createParenthesizedExpression(f.createComma(bump(), e));
  /** @param {import("typescript").Statement} s */
  const block = (s) =>
    ts.isBlock(s)
      ? f.updateBlock(s, [bumpStmt(), ...s.statements])
      : f.createBlock([bumpStmt(), s], true);
  /** @param {import("typescript").Node} node @returns {import("typescript").Node} */
  const visit = (node) => {
    const n = ts.visitEachChild(node, visit, ctx);
    if (ts.isIfStatement(n))
      return f.updateIfStatement(
        n,
        n.expression,
        block(n.thenStatement),
        n.elseStatement === undefined ? f.createBlock([bumpStmt()]) : block(n.elseStatement),
      );
    if (ts.isForStatement(n))
      return f.updateForStatement(n, n.initializer, n.condition, n.incrementor, block(n.statement));
    if (ts.isForOfStatement(n))
      return f.updateForOfStatement(
        n,
        n.awaitModifier,
        n.initializer,
        n.expression,
        block(n.statement),
      );
    if (ts.isForInStatement(n))
      return f.updateForInStatement(n, n.initializer, n.expression, block(n.statement));
    if (ts.isWhileStatement(n)) return f.updateWhileStatement(n, n.expression, block(n.statement));
    if (ts.isDoStatement(n)) return f.updateDoStatement(n, block(n.statement), n.expression);
    if (ts.isCaseClause(n))
      return f.updateCaseClause(n, n.expression, [bumpStmt(), ...n.statements]);
    if (ts.isDefaultClause(n)) return f.updateDefaultClause(n, [bumpStmt(), ...n.statements]);
    if (ts.isCatchClause(n)) return f.updateCatchClause(n, n.variableDeclaration, block(n.block));
    if (ts.isConditionalExpression(n))
      return f.updateConditionalExpression(
        n,
        n.condition,
        n.questionToken,
        counted(n.whenTrue),
        n.colonToken,
        counted(n.whenFalse),
      );
    if (ts.isBinaryExpression(n)) {
      const k = n.operatorToken.kind;
      if (
        k === ts.SyntaxKind.AmpersandAmpersandToken ||
        k === ts.SyntaxKind.BarBarToken ||
        k === ts.SyntaxKind.QuestionQuestionToken
      )
        return f.updateBinaryExpression(n, n.left, n.operatorToken, counted(n.right));
    }
    if (
      (ts.isFunctionDeclaration(n) ||
        ts.isFunctionExpression(n) ||
        ts.isMethodDeclaration(n) ||
        ts.isConstructorDeclaration(n) ||
        ts.isGetAccessorDeclaration(n) ||
        ts.isSetAccessorDeclaration(n)) &&
      n.body !== undefined
    ) {
      return withBody(f, n, f.updateBlock(n.body, [bumpStmt(), ...n.body.statements]));
    }
    if (ts.isArrowFunction(n)) {
      const body = ts.isBlock(n.body)
        ? f.updateBlock(n.body, [bumpStmt(), ...n.body.statements])
        : counted(n.body);
      return f.updateArrowFunction(
        n,
        n.modifiers,
        n.typeParameters,
        n.parameters,
        n.type,
        n.equalsGreaterThanToken,
        body,
      );
    }
    return n;
  };
  return (sf) => /** @type {import("typescript").SourceFile} */ (visit(sf));
};

/**
 * Replaces the body of a function-like node.
 * @param {import("typescript").NodeFactory} f
 * @param {any} n
 * @param {import("typescript").Block} body
 */
function withBody(f, n, body) {
  if (ts.isFunctionDeclaration(n))
    return f.updateFunctionDeclaration(
      n,
      n.modifiers,
      n.asteriskToken,
      n.name,
      n.typeParameters,
      n.parameters,
      n.type,
      body,
    );
  if (ts.isFunctionExpression(n))
    return f.updateFunctionExpression(
      n,
      n.modifiers,
      n.asteriskToken,
      n.name,
      n.typeParameters,
      n.parameters,
      n.type,
      body,
    );
  if (ts.isMethodDeclaration(n))
    return f.updateMethodDeclaration(
      n,
      n.modifiers,
      n.asteriskToken,
      n.name,
      n.questionToken,
      n.typeParameters,
      n.parameters,
      n.type,
      body,
    );
  if (ts.isConstructorDeclaration(n))
    return f.updateConstructorDeclaration(n, n.modifiers, n.parameters, body);
  if (ts.isGetAccessorDeclaration(n))
    return f.updateGetAccessorDeclaration(n, n.modifiers, n.name, n.parameters, n.type, body);
  return f.updateSetAccessorDeclaration(n, n.modifiers, n.name, n.parameters, body);
}

/**
 * Compiles one source with counters.
 * @param {string} code
 * @param {string} fileName
 */
export function instrumentSource(code, fileName) {
  const out = ts.transpileModule(code, {
    fileName,
    compilerOptions: {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
      verbatimModuleSyntax: true,
      isolatedModules: true,
      sourceMap: false,
      inlineSourceMap: true,
      inlineSources: false,
    },
    transformers: { before: [coverage] },
  });
  return `__virtioFuzzNote(${Math.min(nextId, COUNTERS)});\n${out.outputText}`;
}

/** @type {import("node:module").LoadHook} */
export async function load(url, context, nextLoad) {
  if (url.startsWith("file:")) {
    const path = fileURLToPath(url);
    if (shouldInstrument(path)) {
      const source = instrumentSource(readFileSync(path, "utf8"), path);
      return { format: "module", source, shortCircuit: true };
    }
  }
  return nextLoad(url, context);
}
