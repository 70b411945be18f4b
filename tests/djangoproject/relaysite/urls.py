from django.urls import path
from shop import views

urlpatterns = [
    path("ping", views.ping),
    path("rendezvous", views.rendezvous),
    path("orders/save", views.save_order),
    path("orders/rollback", views.rollback_order),
]
