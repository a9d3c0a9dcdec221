"""Edge export bundles: conversion to TorchScript and TFLite, and the zip with its runner (ADR 30)."""
