// `npm run lab-schema`: writes lab/lab.schema.json (the lab file's JSON Schema, for editors) from
// lab/schema.ts; lab/spec.test.ts fails when the file is not up to date.
import { writeFileSync } from 'node:fs';
import { labJsonSchemaText } from '../lab/schema.js';

writeFileSync(new URL('../lab/lab.schema.json', import.meta.url), labJsonSchemaText());
console.log('lab/lab.schema.json written');
