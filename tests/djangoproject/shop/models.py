import uuid

from django.db import models


class Customer(models.Model):
    name = models.CharField(max_length=100, unique=True)
    email = models.EmailField(blank=True)


class Tag(models.Model):
    name = models.CharField(max_length=50, unique=True)


class Order(models.Model):
    uid = models.UUIDField(default=uuid.uuid4)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    number = models.CharField(max_length=20, unique=True)
    total = models.DecimalField(max_digits=10, decimal_places=2)
    placed_at = models.DateTimeField()
    paid = models.BooleanField(default=False)
    notes = models.TextField(blank=True)
    extra = models.JSONField(default=dict, blank=True)
    attachment = models.FileField(blank=True)
    blob = models.BinaryField(default=b"", blank=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="orders")


class AuditEntry(models.Model):
    """Not in RELAY["MODELS"]: its saves are never relayed."""

    message = models.CharField(max_length=100)
