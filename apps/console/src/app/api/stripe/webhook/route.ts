import { billing } from "@/server/billing";

export const dynamic = "force-dynamic";

let handler: ((req: Request) => Promise<Response>) | undefined;

/** Stripe's webhook endpoint: signature-verified, each event applied once (packages/billing). */
export async function POST(req: Request): Promise<Response> {
  const { stripe } = billing();
  if (!stripe)
    return Response.json(
      { error: { code: "NOT_FOUND", message: "billing is not configured on this platform" } },
      { status: 404 },
    );
  handler ??= stripe.webhookHandler();
  return handler(req);
}
