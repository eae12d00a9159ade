"use client";

import { useMutation, useQuery } from "@tanstack/react-query";
import { DataTable } from "@/components/data-table";
import { FormError } from "@/components/form";
import { StateBadge } from "@/components/state-badge";
import { Loading, When } from "@/components/when";
import { shownError } from "@/lib/errors";
import { atLeast, useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";
import { PlanLimits } from "./plan-limits";
import { UsageByDay } from "./usage-chart";

const QUANTITY_LABELS: Record<string, string> = {
  requests: "Requests",
  cpuSeconds: "CPU seconds",
  gpuSeconds: "GPU seconds",
  memoryGibSeconds: "Memory GiB·s",
  buildSeconds: "Build seconds",
  egressBytes: "Egress bytes",
};

const usd = (x: number) => `$${x.toFixed(x < 1 ? 4 : 2)}`;
const amount = (x: number) => (Number.isInteger(x) ? String(x) : x.toFixed(2));

/** Plan, this month's metered usage and its cost per deployment, invoices, Stripe links. */
export default function BillingPage() {
  const { org } = useConsole();
  const trpc = useTRPC();
  const input = { orgId: org.id };
  const plan = useQuery(trpc.billing.plan.queryOptions(input));
  const usage = useQuery({ ...trpc.billing.usageSummary.queryOptions(input), refetchInterval: 30_000 });
  const invoices = useQuery({
    ...trpc.billing.invoices.queryOptions(input),
    enabled: atLeast(org.role, "admin"),
  });
  const go = { onSuccess: (r: { url: string }) => window.location.assign(r.url) };
  const checkout = useMutation(trpc.billing.checkout.mutationOptions(go));
  const portal = useMutation(trpc.billing.portal.mutationOptions(go));

  return (
    <>
      <h1>Usage and billing</h1>
      <FormError error={shownError(plan.error ?? usage.error ?? checkout.error ?? portal.error)} />
      {plan.isLoading ? <Loading what="the plan" /> : null}
      {plan.data ? (
        <section className="panel" aria-labelledby="plan-title">
          <h2 id="plan-title">
            Plan: {plan.data.plan.name} <StateBadge state={plan.data.subscriptionStatus} />
          </h2>
          {plan.data.paymentFailed ? (
            <p className="form-error" role="alert">
              The last payment failed <When at={plan.data.paymentFailedAt} />: update the payment method.
            </p>
          ) : null}
          <p>
            {plan.data.monthlyRequests} requests this month.{" "}
            {plan.data.enforced ? (
              "Plan limits apply."
            ) : (
              <span className="muted">Plan limits are not enforced here.</span>
            )}
          </p>
          <PlanLimits limits={plan.data.plan.limits} />
          {!plan.data.configured ? (
            <p className="muted">
              Billing is not configured on this platform (no Stripe account): usage is metered, nothing is
              charged.
            </p>
          ) : org.role === "owner" ? (
            <div className="row">
              {!plan.data.plan.paid ? (
                <button type="button" disabled={checkout.isPending} onClick={() => checkout.mutate(input)}>
                  Upgrade
                </button>
              ) : null}
              {plan.data.hasCustomer ? (
                <button
                  type="button"
                  className="secondary"
                  disabled={portal.isPending}
                  onClick={() => portal.mutate(input)}
                >
                  Manage billing
                </button>
              ) : null}
            </div>
          ) : null}
        </section>
      ) : null}
      {usage.data ? (
        <>
          <h2>
            This period (<When at={usage.data.periodStart} /> – <When at={usage.data.periodEnd} />
            ): <span data-testid="period-cost">{usd(usage.data.totalCost)}</span>
          </h2>
          <DataTable
            label="Usage this period"
            rows={Object.entries(usage.data.totals)}
            rowKey={([k]) => k}
            columns={[
              { header: "Metered", cell: ([k]) => QUANTITY_LABELS[k] ?? k },
              { header: "Quantity", cell: ([, v]) => amount(v) },
              {
                header: "Cost",
                cell: ([k]) => usd((usage.data.costByQuantity as Record<string, number>)[k] ?? 0),
              },
            ]}
          />
          <DataTable
            label="Cost by deployment"
            empty="No metered usage this period yet."
            rows={usage.data.byDeployment}
            rowKey={(d) => d.deploymentId ?? "none"}
            columns={[
              { header: "Deployment", cell: (d) => d.name ?? (d.deploymentId ? "(deleted)" : "(builds)") },
              { header: "Requests", cell: (d) => d.quantities.requests },
              { header: "Errors", cell: (d) => d.errors },
              { header: "CPU s", cell: (d) => amount(d.quantities.cpuSeconds) },
              { header: "Cost", cell: (d) => usd(d.cost) },
            ]}
          />
        </>
      ) : null}
      {plan.data ? <UsageByDay prices={plan.data.plan.prices} /> : null}
      {atLeast(org.role, "admin") ? (
        <>
          <h2>Invoices</h2>
          <DataTable
            label="Invoices"
            empty="No invoices yet."
            rows={invoices.data}
            rowKey={(i) => i.id}
            columns={[
              { header: "Invoice", cell: (i) => i.number ?? i.id },
              { header: "Status", cell: (i) => <StateBadge state={i.status ?? "unknown"} /> },
              { header: "Amount due", cell: (i) => usd(i.amountDue / 100) },
              { header: "Paid", cell: (i) => usd(i.amountPaid / 100) },
              {
                header: "",
                cell: (i) =>
                  i.hostedInvoiceUrl ? (
                    <a href={i.hostedInvoiceUrl} target="_blank" rel="noreferrer">
                      View
                    </a>
                  ) : null,
              },
            ]}
          />
        </>
      ) : null}
    </>
  );
}
