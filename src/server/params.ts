/** Path parameters the API's routes share (TypeBox schemas: Fastify validates them before a handler runs). */
import { Type } from '@fastify/type-provider-typebox';

const RunId = Type.String({ maxLength: 100 });
export const RunParam = Type.Object({ run: RunId });
export const LatentParams = Type.Object({ run: RunId, latent: Type.Integer({ minimum: 0 }) });
export const ImageParams = Type.Object({ run: RunId, image: Type.Integer({ minimum: 0 }) });
