"""Registers the built-in actions: the union of AutomateWoo's, the customer-history
plugin's and Polski Pro's actions."""

from wooflow.workers.actions.coupons import ApplyCoupon
from wooflow.workers.actions.customers import AddCustomerTag, ChangeCustomerRole, RemoveCustomerTag, SetCustomerMeta
from wooflow.workers.actions.email import SendEmail
from wooflow.workers.actions.loyalty import AddPoints, ChangeTier
from wooflow.workers.actions.order_notes import AddOrderNote
from wooflow.workers.actions.orders import ChangeOrderStatus, ResendOrderEmail, SetOrderMeta, TriggerOrderAction
from wooflow.workers.actions.sms import SendSms
from wooflow.workers.actions.tasks import CreateAdminTask
from wooflow.workers.actions.webhook import Webhook
from wooflow.workers.registry import register

for handler in (
    SendEmail(), SendSms(), ApplyCoupon(),
    AddCustomerTag(), RemoveCustomerTag(), ChangeCustomerRole(), SetCustomerMeta(),
    ChangeOrderStatus(), AddOrderNote(), SetOrderMeta(), ResendOrderEmail(), TriggerOrderAction(),
    ChangeTier(), AddPoints(), CreateAdminTask(),
    Webhook(),
):
    register(handler)
