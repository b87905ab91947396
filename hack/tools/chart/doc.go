// Package chart holds the tests of charts/ironlb (see chart_test.go).
package chart
