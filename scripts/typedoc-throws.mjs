// TypeDoc plugin for docs/api: keeps the error type of `@throws {Type} …`
// tags. TypeDoc parses the type (preservedTypeAnnotationTags in typedoc.json)
// but the markdown theme does not print it; this puts it in front of the
// tag's text as code, so "Throws: `VirtioError` `QUEUE_CONFIG` if …" says
// which error, not only when.
import { Converter } from "typedoc";

/** @param {import("typedoc").Application} app */
export function load(app) {
  app.converter.on(Converter.EVENT_RESOLVE_BEGIN, (context) => {
    for (const reflection of Object.values(context.project.reflections)) {
      for (const tag of reflection.comment?.blockTags ?? []) {
        if (tag.tag !== "@throws" || !tag.typeAnnotation) continue;
        const type = tag.typeAnnotation.replace(/^\{\s*|\s*\}$/g, "");
        tag.content = [
          { kind: "code", text: `\`${type}\`` },
          { kind: "text", text: " " },
          ...tag.content,
        ];
        delete tag.typeAnnotation;
      }
    }
  });
}
